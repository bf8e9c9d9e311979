"""The lm-evaluation-harness model `caprese` on caprese's offline YAML tasks: the same greedy
generations and accuracy as `caprese eval` (dense, GRIFFIN, with an adapter), and loglikelihood
continuations scored as generated tokens."""

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval  # caprese[eval], installed by `make setup`

from caprese.cli import main
from caprese.harness import task_manager
from caprese.harness.model import CapreseLM

LIMIT = 8
MAX_NEW = 72  # the longest toy-math (level 5) answer is about 61 tokens
BATCH = 8


@pytest.fixture(scope="module")
def manager():
    return task_manager(include_defaults=False)  # caprese's offline tasks only: indexing lm-eval's own takes long


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    out = tmp_path_factory.mktemp("harness") / "distill"
    assert (
        main(
            [
                "distill",
                "--model",
                "toy-math",
                "--method",
                "griffin",
                "--sparsity",
                "0.5",
                "--layers",
                "first_half",
                "--rank",
                "8",
                "--samples",
                "16",
                "--stage",
                "closed_form",
                "--responses",
                "dataset",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "adapter"


def harness_run(manager, tasks, **model_args):
    lm = CapreseLM(pretrained="toy-math", batch_size=BATCH, **model_args)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, limit=LIMIT, task_manager=manager, log_samples=True, gen_kwargs={"max_gen_toks": MAX_NEW}
    )
    return lm, results


def caprese_eval(tmp_path, *flags):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                "toy-math",
                "--task",
                "toy-math",
                "--samples",
                str(LIMIT),
                "--max-new-tokens",
                str(MAX_NEW),
                "--batch-size",
                str(BATCH),
                "--quiet",
                "--out",
                str(out),
                *flags,
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return metrics, samples


@pytest.mark.parametrize("setting", ["dense", "griffin", "adapter"])
def test_harness_matches_caprese_eval(manager, adapter, tmp_path, setting):
    model_args, flags = {
        "dense": ({}, []),
        "griffin": (
            {"method": "griffin", "sparsity": 0.5, "layers": "first_half"},
            ["--method", "griffin", "--sparsity", "0.5", "--layers", "first_half"],
        ),
        "adapter": ({"adapter": str(adapter)}, ["--adapter", str(adapter)]),
    }[setting]
    lm, results = harness_run(manager, ["caprese_toy_math"], **model_args)
    metrics, samples = caprese_eval(tmp_path, *flags)
    harness_texts = {s["doc"]["id"]: s["filtered_resps"][0] for s in results["samples"]["caprese_toy_math"]}
    assert len(harness_texts) == LIMIT
    assert harness_texts == {s["id"]: s["response"] for s in samples}  # the very same greedy generations
    assert results["results"]["caprese_toy_math"]["acc,none"] == pytest.approx(metrics["accuracy"], abs=1e-12)
    assert lm.last_session["method"]["method"] == metrics["method"]["method"]
    if setting != "dense":
        assert lm.last_session["measured_sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)


def mc_scores(results):
    return {s["doc"]["id"]: [r[0][0] for r in s["resps"]] for s in results["samples"]["caprese_toy_math_mc"]}


def test_loglikelihood_continuation_counts_as_generated(manager):
    _, dense = harness_run(manager, ["caprese_toy_math_mc"])
    lm, griffin = harness_run(manager, ["caprese_toy_math_mc"], method="griffin", sparsity=0.5, layers="first_half")
    dense_scores, griffin_scores = mc_scores(dense), mc_scores(griffin)
    assert dense_scores.keys() == griffin_scores.keys() and len(dense_scores) == LIMIT
    differences = [abs(a - b) for doc in dense_scores for a, b in zip(dense_scores[doc], griffin_scores[doc])]
    assert min(differences) > 1e-4  # every multi-token continuation is scored under the method
    assert dense["results"]["caprese_toy_math_mc"]["acc,none"] >= 0.75  # the toy model knows its arithmetic

    # and the score is exactly "prefill the context, then decode the continuation token by token"
    sample = griffin["samples"]["caprese_toy_math_mc"][0]
    context, continuation = sample["arguments"][0]
    context_ids = lm.tok_encode(context)
    full = lm.tok_encode(context + continuation)
    continuation_ids = full[len(context_ids) :]
    with lm.method_session(), torch.inference_mode():
        out = lm.model(torch.tensor([context_ids]), use_cache=True)
        cache, logits, total = out.past_key_values, out.logits[0, -1], 0.0
        for token in continuation_ids:
            total += torch.log_softmax(logits.double(), -1)[token].item()
            out = lm.model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1]
    assert math.isclose(total, sample["resps"][0][0][0], rel_tol=1e-4, abs_tol=1e-3)


def test_model_args_string_and_bad_input(manager):
    lm = lm_eval.api.registry.get_model("caprese").create_from_arg_string(
        "pretrained=toy-math,method=griffin,sparsity=0.25,layers=0;1,reselect_every=4,dtype=float32"
    )
    assert (lm.spec.name, lm.spec.sparsity, lm.spec.layers) == ("griffin", 0.25, "0,1")
    assert lm.spec.options["reselect_every"] == 4
    from caprese.errors import CapreseError

    with pytest.raises(CapreseError, match="did you mean 'griffin'"):
        CapreseLM(pretrained="toy-math", method="grifin")
    with pytest.raises(CapreseError, match="reselect-every is a griffin option"):
        CapreseLM(pretrained="toy-math", method="cats", reselect_every=4)
    with pytest.raises(CapreseError, match="did you mean 'sparsity'"):
        CapreseLM(pretrained="toy-math", method="griffin", sparsty=0.5)


def test_lm_eval_verb_writes_results_beside_metrics(tmp_path, capsys):
    out = tmp_path / "harness"
    assert (
        main(
            [
                "lm-eval",
                "--model",
                "toy-math",
                "--method",
                "topk",
                "--sparsity",
                "0.5",
                "--tasks",
                "caprese_toy_math",
                "--limit",
                "2",
                "--max-new-tokens",
                "16",
                "--log-samples",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"]["method"] == "topk" and "acc,none" in metrics["results"]["caprese_toy_math"]
    assert json.loads((out / "lm_eval_results.json").read_text())["results"]["caprese_toy_math"]["sample_len"] == 2
    assert len((out / "lm_eval_samples.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    code = main(["lm-eval", "--model", "toy-math", "--tasks", "caprese_toy_mth", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "did you mean 'caprese_toy_math'" in err[0]


def test_offline_tasks_hold_caprese_rows(manager):
    from caprese.data.prompts import plain_prompt
    from caprese.data.tasks import load_task_rows

    tasks = lm_eval.tasks.get_task_dict(["caprese_gsm8k_100", "caprese_toy_language", "caprese_toy_math"], manager)
    for name, caprese_task, n in [
        ("caprese_gsm8k_100", "gsm8k-100", 100),
        ("caprese_toy_language", "toy-language", 500),
        ("caprese_toy_math", "toy-math", 500),
    ]:
        docs = list(tasks[name].test_docs())
        rows = load_task_rows(caprese_task, n)
        assert len(docs) == n and [d["id"] for d in docs] == [r["id"] for r in rows]
        assert tasks[name].doc_to_text(docs[3]) == plain_prompt(rows[3]["question"])
