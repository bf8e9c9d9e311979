"""The real-model measurements: teacher-forced perplexity/KL under a method, text sets, the few-shot
arithmetic task and its prompt, intervals, ablations/real.yaml and the figures/real panels."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from caprese.data import arithmetic
from caprese.data.prompts import build_prompt
from caprese.data.tasks import load_task_rows
from caprese.data.texts import SYMBOLIC_SEED_OFFSET, kjv_passages, load_text_rows, texts_as_items
from caprese.errors import CapreseError
from caprese.evaluate import perplexity
from caprese.methods import apply_method
from caprese.stats.intervals import paired_difference_interval, wilson_interval
from caprese.stats.intervals import ratio_bootstrap_interval as ratio_interval
from caprese.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The cat sat on the mat and looked at the bird for a long time.",
    "Ann has a red ball and a blue kite, and she flies the kite in the park.",
]
PAIRS = [
    {"id": "a", "prompt": "Question: 2 + 3?\nAnswer:", "response": " 2 + 3 = 5. So the answer is 5."},
    {"id": "b", "prompt": "Question: 7 + 1?\nAnswer:", "response": " 7 + 1 = 8, and 8 is the answer."},
]


# -- perplexity / KL ---------------------------------------------------------------------------------
@pytest.mark.parametrize("items", [TEXTS, PAIRS], ids=["plain", "prompt-response"])
def test_perplexity_under_a_method_differs_from_dense_and_equals_it_under_dense(items):
    model, tok = tiny_model(), tiny_tokenizer()
    plain = perplexity(model, tok, items, None, prefix_tokens=8)
    assert plain.kl == 0.0 and plain.perplexity == plain.dense_perplexity and math.isfinite(plain.perplexity)
    with apply_method(model, "dense", 0.0) as session:
        dense = perplexity(model, tok, items, session, prefix_tokens=8)
    assert dense.perplexity == pytest.approx(plain.perplexity, rel=1e-6) and dense.kl == pytest.approx(0.0, abs=1e-7)
    with apply_method(model, "topk", 0.7) as session:
        sparse = perplexity(model, tok, items, session, prefix_tokens=8)
    assert abs(sparse.perplexity - plain.perplexity) > 1e-4  # a random tiny model: small but real
    assert sparse.dense_perplexity == pytest.approx(plain.perplexity, rel=1e-6)  # same session, every token prompt
    assert sparse.kl > 0 and all(t.kl >= -1e-6 for t in sparse.texts)
    assert sparse.tokens == plain.tokens and len(sparse.texts) == len(items)


def test_only_continuation_tokens_predicted_from_generated_positions_are_scored():
    model, tok = tiny_model(), tiny_tokenizer()
    result = perplexity(model, tok, PAIRS, None, max_continuation_tokens=10)
    # 10 continuation tokens: the first is predicted by the (dense) prompt, so 9 are scored
    assert [t.tokens for t in result.texts] == [9, 9] and [t.id for t in result.texts] == ["a", "b"]
    texts = perplexity(model, tok, TEXTS, None, prefix_tokens=8)
    assert [t.tokens for t in texts.texts] == [len(tok(t)["input_ids"]) - 9 for t in TEXTS]


def test_perplexity_is_the_exp_of_token_weighted_nll_and_intervals_bracket_it():
    model, tok = tiny_model(), tiny_tokenizer()
    with apply_method(model, "griffin", 0.5) as session:
        result = perplexity(
            model, tok, TEXTS + [p["prompt"] + p["response"] for p in PAIRS], session, prefix_tokens=6, batch_size=3
        )
    nll = sum(t.nll for t in result.texts) / sum(t.tokens for t in result.texts)
    assert result.perplexity == pytest.approx(math.exp(nll))
    scores = result.as_dict(per_text=True)
    for key in ("perplexity", "kl_dense_to_method"):
        low, high = scores["ci95"][key]
        assert low <= scores[key] <= high
    assert scores["texts"] == 4 and len(scores["per_text"]["kl"]) == 4


def test_perplexity_bad_input_is_one_line():
    model, tok = tiny_model(), tiny_tokenizer()
    with pytest.raises(CapreseError, match="no token to score"):
        perplexity(model, tok, ["short"], None, prefix_tokens=64)
    with pytest.raises(CapreseError, match="text 0 must be a string or a row"):
        perplexity(model, tok, [{"question": "x"}], None)
    with pytest.raises(CapreseError, match="max_continuation_tokens"):
        perplexity(model, tok, TEXTS, None, max_continuation_tokens=1)


# -- intervals ---------------------------------------------------------------------------------------
def test_wilson_interval_known_values():
    low, high = wilson_interval(9, 10)
    assert low == pytest.approx(0.5958, abs=1e-4) and high == pytest.approx(0.9821, abs=1e-4)
    assert wilson_interval(0, 20)[0] == pytest.approx(0.0, abs=1e-12) and 0 < wilson_interval(0, 20)[1] < 0.2
    with pytest.raises(CapreseError, match="3 of 2"):
        wilson_interval(3, 2)


def test_bootstrap_intervals_shrink_with_more_texts_and_pairing_cancels_shared_noise():
    rng = np.random.default_rng(1)
    few, many = rng.normal(1.0, 0.5, 20), rng.normal(1.0, 0.5, 2000)
    width = lambda v: np.subtract(*ratio_interval(v, np.ones_like(v))[::-1])  # noqa: E731
    assert width(many) < width(few) / 3
    noise = rng.normal(0, 1, 200)
    low, high = paired_difference_interval(noise + 0.1, noise, np.ones(200))
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


# -- text sets ---------------------------------------------------------------------------------------
def test_text_sets_math_and_prose():
    math_rows = load_text_rows("math-text", 103)
    assert len(math_rows) == 103 and math_rows[0]["id"].startswith("gsm8k-test")
    assert math_rows[100]["id"] == f"gsm-symbolic-{SYMBOLIC_SEED_OFFSET}-0"
    assert all("<<" not in row["solution"] for row in math_rows)
    assert len(kjv_passages()) >= 200 and load_text_rows("kjv-prose", 2)[0]["text"].startswith("In the beginning")
    items = texts_as_items(tiny_tokenizer(), math_rows[:1] + load_text_rows("kjv-prose", 1))
    assert items[0]["prompt"].startswith("Question:") and items[0]["response"].startswith(" ")
    assert isinstance(items[1], str)
    with pytest.raises(CapreseError, match="did you mean|not allowed|unknown"):
        load_text_rows("math-txt", 3)


# -- the arithmetic task and its few-shot prompt -------------------------------------------------------
def test_arithmetic_rows_are_correct_levelled_and_reproducible():
    rows = arithmetic.generate_rows(50, seed=3)
    assert rows == arithmetic.generate_rows(50, seed=3) and rows != arithmetic.generate_rows(50, seed=4)
    assert [row["level"] for row in rows[:5]] == [1, 2, 3, 4, 5]
    for row in rows:
        expression = row["question"].removeprefix("What is ").removesuffix("?")
        assert eval(expression) == int(row["final_answer"]) >= 0  # noqa: S307 (digits and + - only)
        assert len(row["few_shot"]) == arithmetic.SHOTS
        assert row["question"] not in {q for q, _ in row["few_shot"]} or row["level"] == 1
    assert {len(r["question"].split()) for r in rows if r["level"] == 5} == {9}  # "What is a + b - c + d?"
    shots = [q for q, _ in rows[0]["few_shot"]]
    assert all(a.endswith(f"= {eval(q.removeprefix('What is ').removesuffix('?'))}") for q, a in rows[0]["few_shot"])  # noqa: S307
    assert shots == [q for q, _ in arithmetic.few_shot_examples(3)[1]]


def test_arithmetic_task_is_registered_with_levels():
    rows = load_task_rows("arithmetic", 6, levels=(1, 2))
    assert [row["level"] for row in rows] == [1, 2, 1, 2, 1, 2]
    with pytest.raises(CapreseError, match=r"level\(s\) \[7\]"):
        load_task_rows("arithmetic", 4, levels=(7,))
    with pytest.raises(CapreseError, match="applies to"):
        load_task_rows("gsm8k-100", 4, levels=(1,))


def test_few_shot_prompt_plain_and_chat():
    tok = tiny_tokenizer()
    shots = [["What is 1 + 2?", "1 + 2 = 3"], ["What is 4 + 4?", "4 + 4 = 8"]]
    prompt = build_prompt(tok, "What is 5 + 2?", few_shot=shots)
    assert prompt == (
        "Question: What is 1 + 2?\nAnswer: 1 + 2 = 3\n\nQuestion: What is 4 + 4?\nAnswer: 4 + 4 = 8\n\n"
        "Question: What is 5 + 2?\nAnswer:"
    )
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    chat = build_prompt(tok, "What is 5 + 2?", few_shot=shots)
    assert chat == (
        "<user>What is 1 + 2?</user><assistant>1 + 2 = 3</assistant><user>What is 4 + 4?</user>"
        "<assistant>4 + 4 = 8</assistant><user>What is 5 + 2?</user><assistant>"
    )
    assert "step by step" in build_prompt(tok, "What is 5 + 2?")  # without shots: the paper's instruction


# -- ablations/real.yaml -----------------------------------------------------------------------------
@pytest.mark.parametrize("full", [False, True])
def test_real_spec_is_valid_and_has_200_per_point(full):
    from caprese.experiment import ExperimentConfig
    from caprese.sweep.spec import load_spec

    spec = load_spec(ROOT / "ablations" / "real.yaml", full=full)
    points = spec.points()
    kinds = {(p.params["method"], p.params["stage"], p.params.get("kind", "caprese")) for p in points}
    assert {
        ("dense", "none", "caprese"),
        ("griffin", "none", "caprese"),
        ("cats", "none", "caprese"),
        ("griffin", "layerwise", "caprese"),
        ("griffin", "e2e", "caprese"),
    } <= kinds
    assert {kind for _, _, kind in kinds} == {"caprese", "lora"}
    for point in points:
        cfg = ExperimentConfig.from_params(point.params)
        assert cfg.model == "smollm2-135m" and set(cfg.eval.text_set_names()) == {"math-text", "kjv-prose"}
        assert cfg.eval.text_samples >= 200 and cfg.eval.samples >= 200  # the per-point floor, both grids
        assert cfg.eval.text_prefix_tokens >= 90  # prose context about as long as a math prompt (median 109)


def test_real_spec_dry_run_cli(capsys):
    from caprese.cli import main

    assert (
        main(["sweep", str(ROOT / "ablations" / "real.yaml"), "--dry-run", "--runs-dir", "/nonexistent-caprese"]) == 0
    )
    assert "6 points" in capsys.readouterr().out


# -- figures/real panels from a small fake results table -------------------------------------------------
def _fake_metrics(method, stage, rank, kind, kl_scale, levels=None):
    config = {
        "model": "smollm2-135m",
        "task": "arithmetic",
        "method": method,
        "sparsity": 0.5,
        "layers": "first_half",
        "stage": stage,
        "rank": rank,
        "kind": kind,
        "samples": 32,
        "seed": 0,
        "eval_samples": 10,
        "eval_seed": 0,
        "max_new_tokens": 64,
        "text_sets": "math-text,kjv-prose",
    }
    rng = np.random.default_rng(len(method) + rank)
    tf = {}
    for name, scale in (("math-text", kl_scale), ("kjv-prose", kl_scale / 3)):
        tokens = [31] * 6
        kl = list(rng.uniform(0.5, 1.5, 6) * scale * 31)
        dense_nll = list(rng.uniform(20, 40, 6))
        nll = [d + k for d, k in zip(dense_nll, kl)]
        tf[name] = {
            "perplexity": math.exp(sum(nll) / 186),
            "dense_perplexity": math.exp(sum(dense_nll) / 186),
            "kl_dense_to_method": sum(kl) / 186,
            "scored_tokens": 186,
            "texts": 6,
            "ci95": {"perplexity": [1, 9], "dense_perplexity": [1, 9], "kl_dense_to_method": [0, 1]},
            "per_text": {
                "id": [str(i) for i in range(6)],
                "tokens": tokens,
                "nll": nll,
                "dense_nll": dense_nll,
                "kl": kl,
            },
        }
    metrics = {"config": config, "teacher_forced": tf}
    if levels:
        metrics["math"] = {
            "accuracy": 0.5,
            "per_level": {str(i + 1): {"count": 10, "correct": c} for i, c in enumerate(levels)},
        }
    return metrics


def test_real_panels_drawn_from_a_fake_results_csv(tmp_path):
    import pandas as pd

    from caprese.figures import render_all
    from caprese.sweep.collect import flatten

    runs = [
        ("dense", "none", 0, "caprese", 0.0, [9, 5, 1]),
        ("griffin", "none", 0, "caprese", 0.2, [5, 3, 0]),
        ("griffin", "e2e", 16, "caprese", 0.05, [8, 4, 0]),
        ("griffin", "e2e", 16, "lora", 0.1, None),
    ]
    rows = [
        {"sweep": "real", "run_id": f"r{i}", "status": "done", **flatten(_fake_metrics(*run))}
        for i, run in enumerate(runs)
    ]
    (tmp_path / "runs" / "real").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "runs" / "real" / "results.csv", index=False)
    out = tmp_path / "figures" / "real"
    report = render_all(tmp_path / "runs", out, only="real")
    assert report.ok and len(report.outcomes) == 5 and not report.not_made, report.summary()
    for name in (
        "real_teacher_forced.png",
        "real_task_levels.png",
        "real_teacher_forced_table.md",
        "real_task_table.csv",
    ):
        assert (out / name).stat().st_size > 0
    table = pd.read_csv(out / "real_teacher_forced_table.csv")
    e2e = table[table["label"].str.contains("Caprese") & (table["text_set"] == "math-text")].iloc[0]
    assert e2e["delta_kl"] < 0 and e2e["delta_kl_lo"] <= e2e["delta_kl"] <= e2e["delta_kl_hi"]
    assert 0 < e2e["kl_recovered"] < 1
    task = pd.read_csv(out / "real_task_table.csv")
    dense_rows = task[task["label"] == "dense"]
    assert (
        list(dense_rows["accuracy"]) == [0.9, 0.5, 0.1] and (dense_rows["accuracy_lo"] < dense_rows["accuracy"]).all()
    )
    summary = pd.read_csv(out / "real_task_summary.csv").set_index("label")
    assert summary.loc["dense", "accuracy"] == pytest.approx(15 / 30)
    caprese_row = summary[summary.index.str.contains("Caprese")].iloc[0]
    # (12/30 - 8/30) / (15/30 - 8/30) = 4/7 of GRIFFIN's loss recovered, inside its interval
    assert caprese_row["recovered"] == pytest.approx(4 / 7)
    assert caprese_row["recovered_lo"] < 4 / 7 < caprese_row["recovered_hi"]
    assert "--only real`" in (out / "README.md").read_text()
    assert not any(o.item.group == "real" for o in render_all(tmp_path / "runs", tmp_path / "paper").outcomes)
    with pytest.raises(CapreseError, match="figure 'real_x' is not allowed"):
        render_all(tmp_path / "runs", out, only="real_x")
    assert json.loads(json.dumps(report.lines()))  # every outcome reads as one line


def test_a_teacher_forced_only_run_writes_per_text_scores(tmp_path):
    from caprese.experiment import ExperimentConfig, run_experiment
    from caprese.testing import save_tiny_model

    folder = save_tiny_model(tmp_path / "model")
    cfg = ExperimentConfig.from_params(
        dict(
            model=str(folder),
            method="topk",
            sparsity=0.5,
            eval_samples=0,
            language_samples=0,
            error_samples=0,
            text_sets="gsm8k-100-solutions,kjv-prose",
            text_samples=3,
            text_prefix_tokens=8,
            text_tokens=12,
            batch_size=2,
            out_dir=str(tmp_path / "runs" / "r"),
        )
    )
    run_experiment(cfg)
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert "math" not in metrics and set(metrics["teacher_forced"]) == {"gsm8k-100-solutions", "kjv-prose"}
    prose = metrics["teacher_forced"]["kjv-prose"]
    assert prose["texts"] == 3 and prose["scored_tokens"] == 3 * 11 and prose["kl_dense_to_method"] > 0
    assert len(prose["per_text"]["kl"]) == 3
    with pytest.raises(CapreseError, match="text set"):
        ExperimentConfig.from_params(dict(text_sets="math-text,prose")).check()


def test_prose_windows_hold_a_math_length_context_and_do_not_overlap():
    from caprese.data.texts import PROSE_WORDS, kjv_windows

    windows = kjv_windows()
    assert len(windows) >= 200 and all(len(w.split()) == PROSE_WORDS for w in windows)
    joined = " ".join(kjv_passages()).split()
    assert " ".join(windows[:2]).split() == joined[: 2 * PROSE_WORDS]  # consecutive, no overlap
    with pytest.raises(CapreseError, match="kjv-prose has"):
        load_text_rows("kjv-prose", len(windows) + 1)


def test_eval_levels_are_checked_before_any_model_loads():
    from caprese.experiment import ExperimentConfig

    assert ExperimentConfig.from_params(dict(task="arithmetic", eval_levels="1,3")).eval.level_numbers() == (1, 3)
    assert ExperimentConfig.from_params(dict(task="arithmetic")).eval.level_numbers() is None
    with pytest.raises(CapreseError, match="not allowed"):
        ExperimentConfig.from_params(dict(task="arithmetic", eval_levels="1,9"))
    with pytest.raises(CapreseError, match="comma-separated"):
        ExperimentConfig.from_params(dict(task="arithmetic", eval_levels="1;2"))
    with pytest.raises(CapreseError, match="apply to"):
        ExperimentConfig.from_params(dict(task="gsm8k-100", eval_levels="1"))


def test_arithmetic_distillation_rows_are_prompted_with_their_few_shot_examples():
    from caprese.distill.data import distillation_rows, question_rows

    questions = question_rows("arithmetic", 3)
    assert {q["id"].split("-")[1] for q in questions} == {"distill"}
    tokenizer = tiny_tokenizer()
    rows = distillation_rows(None, tokenizer, questions, responses="dataset", progress=False)
    for question, row in zip(questions, rows):
        assert row["prompt"] == build_prompt(tokenizer, question["question"], few_shot=question["few_shot"])
        assert question["few_shot"][0][0] in row["prompt"]
