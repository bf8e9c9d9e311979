"""math-verify scoring on hand-written MATH-style answer pairs, the MATH-style task loader, and the
scoring choice recorded in metrics.json (GSM scoring itself: tests/test_scoring.py, unchanged)."""

import json
import threading
from pathlib import Path

import pytest

from caprese.cli import main
from caprese.data.math_scoring import score_math_response, score_with
from caprese.data.math_tasks import load_math
from caprese.data.scoring import score_response
from caprese.data.tasks import load_task_rows, task_scoring
from caprese.errors import CapreseError
from caprese.testing import save_tiny_model

PAIRS = [
    json.loads(line) for line in (Path(__file__).parent / "data" / "math_answer_pairs.jsonl").read_text().splitlines()
]


def test_fixture_is_big_and_balanced():
    assert len(PAIRS) >= 30
    assert sum(p["equivalent"] for p in PAIRS) >= 10 and sum(not p["equivalent"] for p in PAIRS) >= 10


@pytest.mark.parametrize("pair", PAIRS, ids=[p["what"] for p in PAIRS])
def test_math_verify_pairs(pair):
    assert score_with("math-verify", pair["response"], pair["reference"])["correct"] is pair["equivalent"]


def test_gsm_scoring_is_the_numeric_path():
    for response, reference in [
        ("5 + 7 = 12.\n#### 12", "12"),
        ("#### 1,234", 1234),
        ("so \\boxed{\\frac{3}{4}}", "0.75"),
    ]:
        assert score_with("gsm", response, reference) == score_response(response, reference)
    # where they differ: the numeric path compares a box's first number, math-verify the whole answer
    assert (
        score_with("gsm", "\\boxed{x=3}", "3")["correct"] and score_with("math-verify", "\\boxed{x=3}", "3")["correct"]
    )
    assert not score_with("math-verify", "\\boxed{[1,2]}", "(1,2)")["correct"]
    with pytest.raises(CapreseError, match="did you mean 'math-verify'"):
        score_with("math-verfy", "1", "1")


def test_math_verify_off_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(score_math_response("\\boxed{\\frac{1}{2}}", "0.5")))
    worker.start()
    worker.join()
    assert results[0]["correct"]


@pytest.fixture
def math_file(tmp_path):
    rows = [
        {
            "problem": "What is $1/2 + 1/4$?",
            "solution": "We add: $\\frac12+\\frac14=\\boxed{\\frac{3}{4}}$.",
            "level": "Level 2",
            "type": "Prealgebra",
            "unique_id": "test/prealgebra/1.json",
        },
        {
            "problem": "Solve $2x = 6$.",
            "solution": "Divide by two.",
            "answer": "x=3",
            "level": "Level 1",
            "subject": "Algebra",
        },
    ]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_math_style_loader(math_file, tmp_path):
    rows = load_math(math_file)
    assert [r["final_answer"] for r in rows] == ["\\frac{3}{4}", "x=3"]  # answer field, else the solution's box
    assert (
        [r["level"] for r in rows] == [2, 1]
        and rows[0]["subject"] == "Prealgebra"
        and rows[0]["id"] == "test/prealgebra/1.json"
    )
    assert load_task_rows(str(math_file), 1) == rows[:1] and load_task_rows(f"math:{math_file}", 5) == rows
    assert task_scoring(str(math_file)) == "math-verify" and task_scoring("toy-math") == "gsm"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x?", "solution": "no box here"}) + "\n")
    with pytest.raises(CapreseError, match="row 0 has no 'answer'"):
        load_math(bad)


def test_scoring_recorded_in_metrics(math_file, tmp_path):
    model = save_tiny_model(tmp_path / "model")
    runs = {"math": [str(math_file)], "toy": ["toy-math"], "forced": ["toy-math", "--scoring", "math-verify"]}
    scoring = {}
    for name, task in runs.items():
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(model),
                    "--task",
                    *task,
                    "--samples",
                    "2",
                    "--max-new-tokens",
                    "2",
                    "--quiet",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        scoring[name] = json.loads((tmp_path / name / "metrics.json").read_text())["scoring"]
    assert scoring == {"math": "math-verify", "toy": "gsm", "forced": "math-verify"}
