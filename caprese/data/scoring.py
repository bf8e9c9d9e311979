"""Answer extraction and scoring for GSM8K-style responses.

Extraction order: the last `#### x`, else the last `\\boxed{x}`, else the last number in the
text. Numbers are normalised before comparison: thousands separators, currency signs, a
trailing `.0`, percent signs, negative numbers and simple fractions (`3/4`) all compare by value.
Non-numeric answers (the toy-language task) compare as lower-cased words without punctuation.
"""

from __future__ import annotations

import re
from fractions import Fraction

# a number: optional sign, digits with optional thousands separators, optional decimals,
# or a bare decimal like .5; a tight "/denominator" makes it a fraction ("3/4", not "12 / 2")
NUMBER = r"[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|[-−]?\.\d+"
NUMBER_RE = re.compile(NUMBER)
HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
BOXED_OPEN = "\\boxed{"
LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")
LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def extract_hashes(text: str) -> str | None:
    """The rest of the line after the last `####` (empty answers are ignored)."""
    found = [m.group(1).strip() for m in HASHES_RE.finditer(text)]
    found = [f for f in found if f]
    return found[-1] if found else None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, with nested braces balanced."""
    start = text.rfind(BOXED_OPEN)
    if start < 0:
        return None
    depth, i = 1, start + len(BOXED_OPEN)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: treat as no boxed answer


def extract_last_number(text: str) -> str | None:
    found = NUMBER_RE.findall(text)
    return found[-1] if found else None


def extract_answer(text: str) -> str | None:
    """The model's final answer as written (not yet normalised), or None if there is none."""
    for extractor in (extract_hashes, extract_boxed, extract_last_number):
        answer = extractor(text)
        if answer is not None:
            return answer
    return None


def strip_latex(text: str) -> str:
    text = LATEX_FRAC.sub(r"\1/\2", text)
    text = LATEX_WRAPPERS.sub(r"\1", text)
    return text.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("\\,", "")


def parse_number(text: str | None) -> Fraction | None:
    """The value of the first number in `text` (e.g. "$1,234.50" -> 1234.5), or None."""
    if text is None:
        return None
    text = strip_latex(str(text)).replace("−", "-")
    match = NUMBER_RE.search(text)
    if match is None:
        return None
    token = match.group(0).replace(",", "")
    if "/" in token:
        numerator, denominator = token.split("/")
        if int(denominator) == 0:
            return None
        return Fraction(numerator) / int(denominator)
    return Fraction(token)


def normalise_text(text: str | None) -> str:
    """Lower-case words only: "**Red.**" -> "red"."""
    if text is None:
        return ""
    return " ".join(re.findall(r"[a-z0-9]+", strip_latex(str(text)).lower()))


def is_numeric(reference) -> bool:
    return isinstance(reference, (int, float, Fraction)) or parse_number_exact(str(reference)) is not None


def parse_number_exact(text: str) -> Fraction | None:
    """Like parse_number, but only when `text` is nothing but one number (with $ , % decorations)."""
    cleaned = strip_latex(text).strip().strip("$%").strip()
    if not NUMBER_RE.fullmatch(cleaned):
        return None
    return parse_number(cleaned)


def answers_match(predicted: str | None, reference) -> bool:
    """Numeric references compare by value; anything else compares as normalised words."""
    if predicted is None:
        return False
    if is_numeric(reference):
        expected = reference if isinstance(reference, Fraction) else parse_number(str(reference))
        return parse_number(predicted) == expected
    return normalise_text(predicted) == normalise_text(reference)


def reference_answer(gsm_answer: str) -> str:
    """The final answer of a GSM8K `answer` field (the text after `####`)."""
    answer = extract_hashes(gsm_answer)
    if answer is None:
        raise ValueError("reference answer has no '#### n' line")
    return answer


def score_response(response: str, reference) -> dict:
    """{"predicted": extracted answer or None, "correct": bool} for one response."""
    predicted = extract_answer(response)
    return {"predicted": predicted, "correct": answers_match(predicted, reference)}
