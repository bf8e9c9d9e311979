"""`caprese eval` and the in-memory evaluation it wraps (batched, left-padded generation)."""

import argparse
import json

import pytest
import torch

from caprese.commands import eval as eval_command
from caprese.errors import CapreseError
from caprese.evaluate import GenerationConfig, evaluate_accuracy, generate
from caprese.io import read_json, read_jsonl


def run_eval(*argv: str) -> int:
    """Parse and run exactly as `caprese eval` does (CLI errors become CapreseError)."""
    parser = argparse.ArgumentParser(prog="caprese")
    eval_command.add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["eval", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def toy():
    from caprese.models.loading import load_model

    return load_model("toy-math")


def test_eval_writes_metrics_and_samples(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_eval("--model", "toy-math", "--task", "toy-math", "--samples", "15", "--out", str(out), "--quiet") == 0
    metrics = read_json(out / "metrics.json")
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == metrics["count"] == 15
    assert set(metrics["per_level"]) == {"1", "2", "3", "4", "5"}
    assert all(group["count"] == 3 for group in metrics["per_level"].values())
    assert metrics["correct"] == sum(s["correct"] for s in samples)
    assert metrics["mean_response_tokens"] == pytest.approx(sum(s["response_tokens"] for s in samples) / 15)
    assert metrics["model"] == "toy-math" and metrics["task"] == "toy-math"
    assert metrics["settings"]["decoding"] == "greedy" and metrics["settings"]["max_new_tokens"] == 256
    assert metrics["accuracy"] >= 0.6  # a trained model, not noise
    assert all("Please reason step by step." in s["prompt"] for s in samples)
    assert "accuracy" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_eval_levels_and_language(tmp_path):
    run_eval(
        "--model",
        "toy-math",
        "--task",
        "toy-math",
        "--levels",
        "2",
        "--samples",
        "4",
        "--out",
        str(tmp_path / "a"),
        "--quiet",
    )
    assert set(read_json(tmp_path / "a" / "metrics.json")["per_level"]) == {"2"}
    run_eval("--model", "toy-math", "--task", "toy-language", "--samples", "8", "--out", str(tmp_path / "b"), "--quiet")
    language = read_json(tmp_path / "b" / "metrics.json")
    assert language["per_level"] == {} and language["count"] == 8 and language["accuracy"] >= 0.75


def test_eval_on_a_local_file(tmp_path):
    from caprese.data.toy_math import generate_rows
    from caprese.io import write_jsonl

    data = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"question": r["question"], "answer": r["answer"]} for r in generate_rows(4, seed=9, levels=[1])],
    )
    run_eval("--model", "toy-math", "--task", str(data), "--samples", "4", "--out", str(tmp_path / "o"), "--quiet")
    assert read_json(tmp_path / "o" / "metrics.json")["count"] == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "toy-maths"], "did you mean 'toy-math'"),
        (["--task", "toy-language", "--levels", "1"], "toy-math only"),
        (["--task", "toy-math", "--levels", "1,x"], "'1,x'"),
        (["--task", "toy-math", "--levels", "9"], "9"),
        (["--task", "toy-math", "--samples", "0"], "--samples 0"),
        (["--task", "toy-math", "--top-p", "0"], "top_p 0.0"),
        (["--task", "toy-math", "--temperature", "-1"], "temperature -1.0"),
        (["--task", "missing.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, argv, message):
    with pytest.raises(CapreseError, match=message) as err:
        run_eval("--model", "toy-math", "--out", str(tmp_path), *argv)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "metrics.json").exists()


def test_eval_is_a_cli_verb(tmp_path):
    from caprese import cli

    assert cli.main(["eval", "--model", "toy-math", "--task", "toy-maths", "--out", str(tmp_path)]) == 2


def test_batched_left_padded_generation_matches_one_at_a_time(toy):
    from caprese.data.prompts import build_prompt
    from caprese.data.toy_math import generate_rows

    model, tokenizer = toy
    prompts = [build_prompt(tokenizer, r["question"]) for r in generate_rows(6, seed=4)]  # lengths differ by level
    settings = GenerationConfig(max_new_tokens=80, batch_size=6)
    batched = generate(model, tokenizer, prompts, settings, progress=False)
    single = [generate(model, tokenizer, [p], settings, progress=False)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.finished for g in batched)


def test_sampling_is_seeded_and_leaves_global_rng_alone(toy):
    from caprese.data.prompts import build_prompt

    model, tokenizer = toy
    prompts = [
        build_prompt(tokenizer, "Ann has 5 apples. She buys 7 more apples. How many apples does Ann have now?")
    ] * 8
    hot = GenerationConfig(max_new_tokens=30, temperature=2.0, top_p=1.0, seed=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [g.text for g in generate(model, tokenizer, prompts, hot, progress=False)]
    assert torch.equal(torch.get_rng_state(), state)
    assert first == [g.text for g in generate(model, tokenizer, prompts, hot, progress=False)]
    other = [
        g.text
        for g in generate(
            model, tokenizer, prompts, GenerationConfig(max_new_tokens=30, temperature=2.0, seed=2), progress=False
        )
    ]
    assert other != first


def test_in_memory_evaluation_sees_model_changes(toy):
    """evaluate_accuracy scores the model object as it is now: breaking the FFN must show."""
    from caprese.data.tasks import load_task_rows

    model, tokenizer = toy
    rows = load_task_rows("toy-math", 10, seed=3, levels=[1])
    settings = GenerationConfig(max_new_tokens=40)
    before = evaluate_accuracy(model, tokenizer, rows, settings, progress=False).metrics["accuracy"]
    saved = [layer.mlp.down_proj.weight.detach().clone() for layer in model.model.layers]
    try:
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.data.zero_()
        after = evaluate_accuracy(model, tokenizer, rows, settings, progress=False).metrics["accuracy"]
    finally:
        for layer, weight in zip(model.model.layers, saved):
            layer.mlp.down_proj.weight.data.copy_(weight)
    assert before >= 0.8 and after < before
    assert json.dumps(evaluate_accuracy(model, tokenizer, rows[:2], settings, progress=False).metrics)  # JSON-able
