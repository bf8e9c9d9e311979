from fractions import Fraction

import pytest

from caprese.data.scoring import (
    answers_match,
    extract_answer,
    extract_boxed,
    parse_number,
    reference_answer,
    score_response,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5 + 7 = 12.\n#### 12", "12"),
        ("#### 3\nwait, no\n#### 4", "4"),  # the last one counts
        ("#### \nso 9", "9"),  # an empty #### line falls through to the last number
        ("The answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # nested braces, last box
        ("#### 7 and \\boxed{8}", "7 and \\boxed{8}"),  # #### wins: its whole line is the answer
        ("she pays $1,234.50 in total", "1,234.50"),
        ("temperature drops to -5 degrees", "-5"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_hash_line_is_read_by_its_first_number():
    assert answers_match(extract_answer("#### 7 and \\boxed{8}"), 7)
    assert answers_match(extract_answer("#### $1,200 per month"), "1200")


def test_unbalanced_boxed_is_ignored():
    assert extract_boxed("\\boxed{12") is None
    assert extract_answer("3 apples \\boxed{12") == "12"  # falls back to the last number


@pytest.mark.parametrize(
    "text, value",
    [
        ("1,234", Fraction(1234)),
        ("$1,234.50", Fraction(246900, 200)),
        ("72.0", Fraction(72)),
        ("72.", Fraction(72)),
        ("-5", Fraction(-5)),
        ("−5", Fraction(-5)),  # unicode minus
        ("3/4", Fraction(3, 4)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("\\dfrac{10}{4}", Fraction(5, 2)),
        ("50%", Fraction(50)),
        (".5", Fraction(1, 2)),
        ("\\$18", Fraction(18)),
        ("\\text{18 dollars}", Fraction(18)),
        ("1/0", None),
        ("abc", None),
        (None, None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "predicted, reference, ok",
    [
        ("18", "18", True),
        ("$18.00", "18", True),
        ("18", 18, True),
        ("1,000", "1000", True),
        ("1000", "1,000", True),
        ("0.75", "3/4", True),
        ("17", "18", False),
        ("-18", "18", False),
        ("180", "18", False),
        ("1.8", "18", False),
        (None, "18", False),
        ("Red.", "red", True),
        ("**Tom**", "Tom", True),
        ("blue", "red", False),
        ("12", "red", False),
    ],
)
def test_answers_match(predicted, reference, ok):
    assert answers_match(predicted, reference) is ok


def test_thousands_separator_does_not_swallow_a_longer_number():
    # "1,2345" is not a thousands-separated number; the last number is 2345
    assert extract_answer("1,2345") == "2345"


def test_tight_fraction_only():
    # an equation's spaced division is not one fraction: the last number is the result
    assert extract_answer("120 / 2 = 60.") == "60"
    assert parse_number("120 / 2") == 120


def test_reference_answer_and_score_response():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 72"
    assert reference_answer(gold) == "72"
    assert score_response("48 + 24 = 72.\n#### 72", "72") == {"predicted": "72", "correct": True}
    assert score_response("48 + 24 = 71.\n#### 71", "72")["correct"] is False
    with pytest.raises(ValueError):
        reference_answer("no final line")
