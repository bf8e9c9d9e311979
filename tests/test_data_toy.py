"""The toy task generators: seeded, deterministic, exported as jsonl, answers verified."""

import collections
import re

import pytest

from caprese.data import toy_language, toy_math
from caprese.data.scoring import answers_match, extract_answer
from caprese.errors import CapreseError
from caprese.io import write_jsonl


def test_same_seed_gives_byte_identical_jsonl(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, toy_math.generate_rows(300, seed=7) + toy_language.generate_rows(100, seed=7))
    write_jsonl(b, toy_math.generate_rows(300, seed=7) + toy_language.generate_rows(100, seed=7))
    assert a.read_bytes() == b.read_bytes()


def test_another_seed_or_split_gives_different_problems():
    base = {r["question"] for r in toy_math.generate_rows(200, seed=0)}
    other_seed = {r["question"] for r in toy_math.generate_rows(200, seed=1)}
    other_split = {r["question"] for r in toy_math.generate_rows(200, split="train", seed=0)}
    assert len(base & other_seed) < 5 and len(base & other_split) < 5
    stories = {r["question"] for r in toy_language.generate_rows(100, seed=0)}
    assert not stories & {r["question"] for r in toy_language.generate_rows(100, seed=1)}


def recompute_from_question(row: dict) -> int:
    """An independent solver: read the start and each operation from the question's words."""
    sentences = re.split(r"(?<=[.?])\s+", row["question"])
    value = int(re.search(r"has (\d+)", sentences[0]).group(1))
    for sentence in sentences[1:-1]:
        number = re.search(r"\d+", sentence)
        if "half" in sentence:
            assert value % 2 == 0, "halving must stay whole"
            value //= 2
        elif "times" in sentence:
            value *= int(number.group())
        elif re.search(r"\b(gives \d+|loses|sells|uses)\b", sentence):
            value -= int(number.group())
        else:  # buys, finds, gets, "<friend> gives <pronoun> n"
            value += int(number.group())
        assert 0 <= value <= toy_math.MAX_VALUE
    return value


def test_every_math_answer_is_verified_by_recomputation():
    rows = toy_math.generate_rows(3000, split="train", seed=3)
    for row in rows:
        assert recompute_from_question(row) == row["final_answer"], row
        assert toy_math.verify_row(row), row
        assert answers_match(extract_answer(row["answer"]), row["final_answer"])


def test_verify_row_catches_a_wrong_step():
    row = toy_math.generate_rows(5, seed=0)[2]
    assert toy_math.verify_row(row)
    lines = row["answer"].split("\n")
    result = toy_math.STEP_LINE.match(lines[1]).group(5)
    wrong = lines[1].replace(f"= {result}.", f"= {int(result) + 1}.")
    assert not toy_math.verify_row({**row, "answer": "\n".join([lines[0], wrong, *lines[2:]])})
    misnamed = lines[1].replace("Second:", "Third:")
    assert not toy_math.verify_row({**row, "answer": "\n".join([lines[0], misnamed, *lines[2:]])})


def test_levels_are_chain_lengths_and_mixed_evenly():
    rows = toy_math.generate_rows(500, seed=0)
    counts = collections.Counter(r["level"] for r in rows)
    assert counts == {level: 100 for level in toy_math.LEVELS}
    for row in rows:
        lines = row["answer"].split("\n")
        assert len(lines) == row["level"] + 1  # one line per operation, then "#### n"
        steps = [toy_math.STEP_LINE.match(line).groups() for line in lines[:-1]]
        assert [step[0] for step in steps] == list(toy_math.ORDINALS[: row["level"]])
        assert all(f"{step[0]}, " in row["question"] for step in steps)  # each step names its sentence
        results = [int(step[4]) for step in steps]
        lefts = [int(step[1]) for step in steps]
        assert lefts[1:] == results[:-1]  # each step's result feeds the next
        assert row["answer"].endswith(f"#### {row['final_answer']}")


def test_only_requested_levels():
    rows = toy_math.generate_rows(40, seed=0, levels=[2, 4])
    assert {r["level"] for r in rows} == {2, 4}
    with pytest.raises(CapreseError, match="6"):
        toy_math.generate_rows(4, levels=[1, 6])


def test_numbers_stay_small():
    for problem in toy_math.generate_problems(2000, split="train", seed=11):
        assert 1 <= problem.start <= toy_math.MAX_START
        for step in problem.steps:
            assert 0 <= step.result <= toy_math.MAX_VALUE
            if step.op in "+-":  # a single digit, or whole tens; exactly one digit changes, no carry
                assert 1 <= step.right <= 9 or (step.right % 10 == 0 and step.right <= 90)
                changed = step.left % 10 != step.result % 10, step.left // 10 != step.result // 10
                assert changed == ((True, False) if step.right <= 9 else (False, True)), step
            if step.op == "*":
                assert step.left <= toy_math.MAX_MULTIPLICAND and step.right in toy_math.FACTORS


def test_language_answer_is_the_only_word_of_the_asked_kind():
    kinds = {
        "colour": toy_language.COLOURS,
        "city": toy_language.CITIES,
        "activity": toy_language.ACTIVITIES,
        "day": toy_language.DAYS,
    }
    asked = set()
    for row in toy_language.generate_rows(500, seed=2):
        *facts, question = re.split(r"(?<=[.?]) ", row["question"])
        sentence, final = row["answer"].split("\n")
        assert final == f"#### {row['final_answer']}"
        assert not re.search(r"\d", row["question"])  # no arithmetic anywhere
        assert len(facts) == len(kinds)
        words = re.findall(r"\w+", " ".join(facts))
        for kind, vocabulary in kinds.items():  # one word of each kind: a wrong lookup cannot be right
            assert sum(word in vocabulary for word in words) == 1, (kind, facts)
        answer = row["final_answer"]
        assert answer in kinds[row["kind"]] and answer in words
        asked.add(row["kind"])
        # the restated fact names the same person, and the question's key words, as the story
        fact = next(f for f in facts if re.search(rf"\b{answer}\b", f))
        assert sentence.split()[0].removesuffix("'s") == fact.split(", ")[-1].split()[0].removesuffix("'s")
        if row["kind"] == "colour":
            name, obj = re.match(r"What colour is (\w+)'s (\w+)\?", question).groups()
            assert fact == sentence == f"{name}'s {obj} is {answer}."
        if row["kind"] == "city":
            name = re.match(r"Where does (\w+) live", question).group(1)
            assert fact == sentence == f"{name} lives in {answer}."
    assert asked == set(kinds)


def test_plain_texts_for_perplexity():
    texts = toy_language.generate_texts(20, seed=0)
    assert len({t["text"] for t in texts}) == 20
    assert all(t["text"].endswith(".") and len(t["text"].split()) > 20 for t in texts)
    assert texts == toy_language.generate_texts(20, seed=0)


def test_exported_jsonl_loads_with_datasets(tmp_path):
    import datasets  # a core dependency: never skipped

    path = write_jsonl(tmp_path / "toy.jsonl", toy_math.generate_rows(20, seed=0))
    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 20 and set(loaded.column_names) >= {"question", "answer", "level", "final_answer"}
    assert loaded[3]["answer"] == toy_math.generate_rows(20, seed=0)[3]["answer"]


def test_negative_count_is_rejected():
    with pytest.raises(CapreseError, match="-1"):
        toy_math.generate_rows(-1)
    with pytest.raises(CapreseError, match="-2"):
        toy_language.generate_rows(-2)
