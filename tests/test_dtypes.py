"""Every stage in float32 and bfloat16 (and float16 where CPU kernels allow), on tiny random models.

Each test runs a stage on a float32 model and on the same weights cast to the low-precision dtype
(a copy: the user's model is never cast in place), asserts that the low-precision outputs are
finite and in the model's dtype, and that they agree with float32 within a stated tolerance.

Tolerances (relative Frobenius error ‖a − b‖/‖b‖ against float32): bf16 keeps 8 mantissa bits
(unit roundoff 2^-9 ≈ 2e-3), so a 2-layer forward of a D = 32 model lands around 1e-2:
  - dense / per-token methods on logits:           FORWARD_TOL = 5e-2
  - methods that select on magnitudes (GRIFFIN, CATS, TEAL thresholds): a near-tie may flip one
    neuron, so                                      SELECT_TOL = 1.5e-1
  - closed-form factors, compared as the product L R: FACTOR_TOL = 1.5e-1
  - layer-wise eq-7 losses (fp32 regression on the teacher's activations):  LOSS_TOL = 5e-2
  - E2E eq-8 losses: the final hidden states' bf16 rounding is of the order of the tiny random
    model's sparsity error itself (measured: 16-24% apart), so      E2E_TOL = 3e-1
float16 has 11 mantissa bits: the bf16 tolerances hold for it with room.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from caprese.distill import MethodChoice, distill
from caprese.distill.adapter import CapreseAdapter
from caprese.distill.e2e import E2EConfig, train_end_to_end
from caprese.distill.layerwise import LayerwiseConfig
from caprese.methods import apply_method
from caprese.methods.forcing import teacher_forced_batch
from caprese.testing import tiny_model, tiny_tokenizer

FORWARD_TOL = 5e-2
SELECT_TOL = 1.5e-1
FACTOR_TOL = 1.5e-1
LOSS_TOL = 5e-2
E2E_TOL = 3e-1
LOW = [torch.bfloat16, torch.float16]
LOW_IDS = ["bf16", "fp16"]

ROWS = [
    {"prompt": "Q: 3+4=?", "response": " 3+4=7. A: 7"},
    {"prompt": "Q: 12+5=?", "response": " 12+5=17. A: 17"},
    {"prompt": "Q: 8+1=?", "response": " 8+1=9. A: 9"},
    {"prompt": "Q: 20+22=?", "response": " 20+22=42. A: 42"},
    {"prompt": "Q: 6+6=?", "response": " 6+6=12. A: 12"},
    {"prompt": "Q: 9+30=?", "response": " 9+30=39. A: 39"},
]
CALIBRATION = ["the cat sat on the mat", "a dog ran to the park and back", "one two three four five"]
METHODS = {
    "dense": ("dense", None, {}, FORWARD_TOL),
    "topk": ("topk", 0.5, {}, SELECT_TOL),
    "griffin": ("griffin", 0.5, {}, SELECT_TOL),
    "griffin_prune_reselect": ("griffin", 0.5, {"prune": True, "reselect_every": 3}, SELECT_TOL),
    "cats": ("cats", 0.5, {}, SELECT_TOL),
    "teal": ("teal", 0.5, {}, SELECT_TOL),
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def tokenizer():
    tok = tiny_tokenizer()
    tok.padding_side = "left"  # as caprese's loader sets it (decoder-only batching)
    return tok


@pytest.fixture(scope="module", params=["LlamaForCausalLM", "Gemma3ForCausalLM"], ids=["llama", "gemma3"])
def fp32_model(request):
    """SwiGLU (Llama) and GeGLU with Gemma-3 norms; the float32 reference."""
    return tiny_model(request.param, seed=0)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("LlamaForCausalLM", seed=0)


@pytest.fixture(scope="module")
def closed_form(fp32_model, tokenizer):
    """A closed-form GRIFFIN adapter of the float32 model, shared (tests must not change it)."""
    return _distill(fp32_model, tokenizer, "closed_form")


def low(model, dtype):
    return copy.deepcopy(model).to(dtype)


def forced_batch(tokenizer):
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in ROWS[:3]]
    continuations = [tokenizer(r["response"], add_special_tokens=False)["input_ids"] for r in ROWS[:3]]
    return teacher_forced_batch(prompts, continuations, pad_id=tokenizer.pad_token_id)


def forced_logits(model, tokenizer, session=None):
    batch = forced_batch(tokenizer)
    with torch.no_grad():
        if session is None:
            return model(**batch.model_inputs()).logits
        with session.teacher_forced(batch.prompt_lengths):
            return model(**batch.model_inputs()).logits


def assert_low(out: torch.Tensor, dtype):
    assert out.dtype == dtype, out.dtype
    assert torch.isfinite(out).all()


# -- methods (incl. calibration, TEAL, GRIFFIN prune/reselect) ------------------------------------


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("method", list(METHODS))
def test_methods_teacher_forced_logits_agree(fp32_model, tokenizer, method, dtype):
    name, sparsity, options, tol = METHODS[method]
    calibration = CALIBRATION if name == "teal" else None
    outs = {}
    for key, model in (("fp32", fp32_model), ("low", low(fp32_model, dtype))):
        with apply_method(
            model, name, sparsity, "all", calibration=calibration, tokenizer=tokenizer, progress=False, **options
        ) as session:
            outs[key] = forced_logits(model, tokenizer, session)
            if sparsity:
                measured = session.measured_sparsity()["overall"]
                assert measured is not None and 0.2 < measured < 0.8
    assert_low(outs["low"], dtype)
    assert rel(outs["low"], outs["fp32"]) < tol


def test_generation_and_eval_in_bf16(llama, tokenizer):
    from caprese.evaluate import GenerationConfig, generate

    model = low(llama, torch.bfloat16)
    settings = GenerationConfig(max_new_tokens=6, batch_size=4)
    with apply_method(model, "griffin", 0.5, "first_half", progress=False):
        outs = generate(model, tokenizer, [r["prompt"] for r in ROWS[:4]], settings, progress=False)
    assert len(outs) == 4 and all(0 < o.n_tokens <= 6 for o in outs)


# -- trace / statistics / diagnostics ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
def test_trace_and_statistics_agree(llama, tokenizer, dtype):
    from caprese.stats.collect import collect_statistics
    from caprese.trace import Trace

    batch = forced_batch(tokenizer)
    results = {}
    for key, model in (("fp32", llama), ("low", low(llama, dtype))):
        with torch.no_grad(), Trace(model, points=["z"], retain=True, clone=True) as trace:
            model(**batch.model_inputs())
        with torch.no_grad(), collect_statistics(model) as stats:
            model(**batch.model_inputs())
        results[key] = (trace[0, "z"], stats)
    z_low, z_ref = results["low"][0], results["fp32"][0]
    assert_low(z_low, dtype)
    assert rel(z_low, z_ref) < FORWARD_TOL
    low_state, ref_state = results["low"][1].state_dict(), results["fp32"][1].state_dict()
    assert low_state.keys() == ref_state.keys()
    compared = 0
    for key, value in _tensors(ref_state):
        other = dict(_tensors(low_state))[key]
        if value.is_floating_point():
            assert torch.isfinite(other).all(), key
            if value.norm() > 0 and value.numel() > 1:
                assert rel(other, value) < SELECT_TOL, key
                compared += 1
    assert compared > 0


def _tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{prefix}/{i}")


def test_diagnostics_in_bf16(llama, tokenizer):
    """Sparsity statistics and the rank-r study of figure 2: the same numbers within 5e-2 (a
    relative L2 error, absolute difference; measured 2e-3 .. 4e-3)."""
    from caprese.diagnostics.pipeline import DiagnoseConfig, run_diagnostics

    prompts = [{"id": str(i), "prompt": r["prompt"]} for i, r in enumerate(ROWS)]
    config = DiagnoseConfig(samples=6, max_new_tokens=8, ranks=(2,), densities=(0.25, 0.5), ridge=1e-2)
    rows = {}
    for key, m in (("fp32", llama), ("low", low(llama, torch.bfloat16))):
        result = run_diagnostics(m, tokenizer, prompts, config, progress=False)
        rows[key] = {(r["density"], r["rank"]): r["relative_l2"] for r in result.figure2_rows()}
    assert rows["low"].keys() == rows["fp32"].keys() and len(rows["low"]) == 4
    for point, value in rows["low"].items():
        assert value == value and 0 <= value < 1, (point, value)
        assert abs(value - rows["fp32"][point]) < 5e-2, (point, value, rows["fp32"][point])


# -- distillation: closed form, layer-wise, E2E (eq 8), LoRA ---------------------------------------


def _distill(model, tokenizer, stage, *, kind="caprese", method=("griffin", 0.5), layers="all", **kw):
    choice = MethodChoice(method[0], method[1], layers)
    return distill(
        model,
        tokenizer,
        ROWS,
        choice,
        rank=4,
        stage=stage,
        kind=kind,
        progress=False,
        # no validation split: the tolerances below were set for every row trained on (few rows here)
        layerwise=LayerwiseConfig(
            rank=4, epochs=2, batch_size=3, lr=3e-3, init=kw.pop("init", "random"), validation_fraction=0.0
        ),
        e2e=E2EConfig(lr=1e-3, batch_size=3, epochs=1),
        **kw,
    )


def _products(adapter):
    return {layer: c.L.detach().float() @ c.R.detach().float() for layer, c in adapter.corrections.items()}


def test_closed_form_agrees_in_bf16(fp32_model, closed_form, tokenizer):
    ref = closed_form
    got = _distill(low(fp32_model, torch.bfloat16), tokenizer, "closed_form")
    for layer, product in _products(got).items():
        assert got.corrections[layer].L.dtype == torch.float32  # float32 masters
        assert torch.isfinite(product).all() and product.norm() > 0
        assert rel(product, _products(ref)[layer]) < FACTOR_TOL, layer


def _losses(adapter, key):
    return {layer: v[key] for layer, v in adapter.config.final_losses["layerwise"].items()}


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_layerwise_agrees(tokenizer, dtype):
    """Eq 7 trains float32 masters on float32 copies of the teacher's activations: the per-layer
    losses agree with float32's within LOSS_TOL (the factors themselves drift more where bf16
    flips a GRIFFIN selection)."""
    model = tiny_model("LlamaForCausalLM", seed=0)
    ref = _distill(model, tokenizer, "layerwise")
    got = _distill(low(model, dtype), tokenizer, "layerwise")
    for layer, loss in _losses(got, "loss").items():
        assert loss == loss and got.corrections[int(layer)].R.dtype == torch.float32
        assert abs(loss - _losses(ref, "loss")[layer]) < LOSS_TOL * _losses(ref, "loss")[layer], layer


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_e2e_trains_on_low_precision_models(fp32_model, tokenizer, dtype):
    """Eq 8 on a bf16/fp16 model: the residual stream keeps the model's dtype (this crashed with
    'expected m1 and m2 to have the same dtype'), the masters stay float32, the loss falls, and
    the losses agree with float32's within E2E_TOL."""
    ref = _distill(fp32_model, tokenizer, "e2e", init="closed_form").config.final_losses
    model = low(fp32_model, dtype)
    got = _distill(model, tokenizer, "e2e", init="closed_form")
    for c in got.corrections.values():
        assert c.L.dtype == c.R.dtype == torch.float32 and torch.isfinite(c.R).all()
    losses = got.config.final_losses
    assert losses["e2e_epochs"][-1] < losses["e2e_initial"]
    for key in ("e2e_initial", "e2e_epochs"):
        value, expected = np.ravel(losses[key])[-1], np.ravel(ref[key])[-1]
        assert abs(value - expected) < E2E_TOL * expected, (key, value, expected)
    with got.apply(model, tokenizer) as session:
        assert_low(forced_logits(model, tokenizer, session), dtype)


def test_e2e_updates_are_not_lost_to_bf16_rounding(tokenizer):
    """Tiny Adam steps (lr 1e-5) still move the float32 masters of a bf16 model as they move fp32's;
    bf16 factors would round most of them away, so they are refused."""
    model = tiny_model("LlamaForCausalLM", seed=0)
    rows_choice = MethodChoice("griffin", 0.5, "all")
    start = _distill(model, tokenizer, "closed_form")
    moved = {}
    for key, m in (("fp32", model), ("bf16", low(model, torch.bfloat16))):
        corrections = {layer: copy.deepcopy(c) for layer, c in start.corrections.items()}
        from caprese.distill.batches import tokenize_pairs

        pairs = tokenize_pairs(tokenizer, ROWS)
        train_end_to_end(
            m,
            rows_choice,
            pairs,
            tokenizer.pad_token_id,
            corrections,
            E2EConfig(lr=1e-5, batch_size=3, epochs=2, warmup_fraction=0.0),
            tokenizer=tokenizer,
            progress=False,
        )
        moved[key] = torch.cat([(corrections[i].R - start.corrections[i].R).flatten() for i in corrections])
    assert moved["bf16"].norm() > 0.5 * moved["fp32"].norm() > 0
    bf16_factors = {layer: copy.deepcopy(c).to(torch.bfloat16) for layer, c in start.corrections.items()}
    with pytest.raises(Exception, match="float32 master"):
        train_end_to_end(
            model,
            rows_choice,
            tokenize_pairs(tokenizer, ROWS),
            tokenizer.pad_token_id,
            bf16_factors,
            E2EConfig(lr=1e-5, batch_size=3, epochs=1),
            tokenizer=tokenizer,
            progress=False,
        )


def test_lora_baseline_in_bf16(llama, tokenizer):
    ref = _distill(llama, tokenizer, "e2e", kind="lora")
    model = low(llama, torch.bfloat16)
    got = _distill(model, tokenizer, "e2e", kind="lora")
    for path in got.corrections.values():
        for name, p in path.named_parameters():
            assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    ref_logits = None
    with ref.apply(llama, tokenizer) as session:
        ref_logits = forced_logits(llama, tokenizer, session)
    with got.apply(model, tokenizer) as session:
        logits = forced_logits(model, tokenizer, session)
    assert_low(logits, torch.bfloat16)
    assert rel(logits, ref_logits) < SELECT_TOL


def test_start_from_a_loaded_adapter_runs_e2e_and_leaves_it_unchanged(llama, tokenizer, tmp_path):
    model = low(llama, torch.bfloat16)
    first = _distill(model, tokenizer, "layerwise")
    first.save(tmp_path / "a")
    loaded = CapreseAdapter.load(tmp_path / "a", model)
    before = {k: v.clone() for k, v in loaded.tensors().items()}
    second = _distill(model, tokenizer, "e2e", start_from=loaded)
    assert all(torch.equal(before[k], v) for k, v in loaded.tensors().items())
    assert any(not torch.equal(before[k], v) for k, v in second.tensors().items())


# -- adapters: apply never changes them; merged = unmerged; save → load -----------------------------


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("merged", [False, True], ids=["unmerged", "merged"])
def test_apply_leaves_the_adapter_unchanged(fp32_model, closed_form, tokenizer, tmp_path, dtype, merged):
    adapter = closed_form
    before = {k: v.clone() for k, v in adapter.tensors().items()}
    params_before = {layer: [p for p in c.parameters()] for layer, c in adapter.corrections.items()}
    model = low(fp32_model, dtype)
    with adapter.apply(model, tokenizer, merged=merged) as session:
        assert_low(forced_logits(model, tokenizer, session), dtype)
    for layer, c in adapter.corrections.items():
        assert all(p.dtype == torch.float32 for p in c.parameters())
        assert all(a is b for a, b in zip(c.parameters(), params_before[layer]))
    after = adapter.tensors()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit: no rounded factors
    adapter.save(tmp_path / "saved")
    reloaded = CapreseAdapter.load(tmp_path / "saved", model)
    assert all(torch.equal(before[k], v) for k, v in reloaded.tensors().items())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, FORWARD_TOL)], ids=["fp32", "bf16"])
def test_merged_equals_unmerged(fp32_model, tokenizer, dtype, tol):
    adapter = _distill(fp32_model, tokenizer, "closed_form", method=("griffin", 0.5), layers="first_half")
    adapter = adapter.with_config(
        method_config={**adapter.config.method_config, "options": {"prune": True, "reselect_every": 3}}
    )
    model = fp32_model if dtype == torch.float32 else low(fp32_model, dtype)
    outs = {}
    for merged in (False, True):
        with adapter.apply(model, tokenizer, merged=merged) as session:
            outs[merged] = forced_logits(model, tokenizer, session)
    assert_low(outs[True], dtype)
    assert rel(outs[True], outs[False]) < tol


def test_fp32_accumulate_option(llama, tokenizer):
    adapter = _distill(llama, tokenizer, "closed_form", method=("topk", 0.5))
    model = low(llama, torch.bfloat16)
    outs = {}
    for accumulate in (False, True):
        with adapter.apply(model, tokenizer, accumulate_fp32=accumulate) as session:
            outs[accumulate] = forced_logits(model, tokenizer, session)
            assert session.wrapper(0).correction.L.dtype == (torch.float32 if accumulate else torch.bfloat16)
        assert_low(outs[accumulate], torch.bfloat16)
    assert rel(outs[True], outs[False]) < FORWARD_TOL


def test_adapter_round_trip_gives_the_same_logits_in_bf16(llama, tokenizer, tmp_path):
    model = low(llama, torch.bfloat16)
    adapter = _distill(model, tokenizer, "closed_form")
    adapter.save(tmp_path / "a")
    loaded = CapreseAdapter.load(tmp_path / "a", model)
    outs = []
    for a in (adapter, loaded):
        with a.apply(model, tokenizer) as session:
            outs.append(forced_logits(model, tokenizer, session))
    assert torch.equal(outs[0], outs[1])


# -- training forwards use the positions generate uses ----------------------------------------------


def test_training_batches_carry_generate_positions():
    from caprese.distill.batches import TokenizedPair, collate

    batch = collate([TokenizedPair([5, 6], [7]), TokenizedPair([5, 6, 8, 9], [7, 3])], pad_token_id=0)
    assert batch.position_ids.tolist() == [[0, 0, 0, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert set(batch.model_inputs()) == {"input_ids", "attention_mask", "position_ids"}


def test_teacher_and_e2e_forwards_pass_the_mask_positions(tokenizer):
    """RoPE hides a left-padding shift; absolute-position or scaled-RoPE models do not, so every
    training forward (teacher pass, eq 8 student and target) passes generate's positions."""
    from caprese.distill.batches import tokenize_pairs

    model = tiny_model("LlamaForCausalLM", seed=1)
    seen = []

    def record(module, args, kwargs):
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        assert positions is not None, "a training forward without position_ids"
        seen.append(torch.equal(positions, (mask.long().cumsum(-1) - 1).clamp(min=0)))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        _distill(model, tokenizer, "e2e")
    finally:
        handle.remove()
    assert seen and all(seen)
    assert len(tokenize_pairs(tokenizer, ROWS)) == len(ROWS)


# -- bench and sweeps -------------------------------------------------------------------------------


def test_bench_runs_in_bf16():
    from caprese.bench import ffn_decode_latency

    result = ffn_decode_latency("tiny", 32, 64, layers=2, dtype=torch.bfloat16, rank=4, repeats=2)
    assert result.dtype == "bfloat16"
    assert all(ms > 0 and ms == ms for ms in result.ms.values())


def test_experiment_dtype_and_device_flow_into_the_run(monkeypatch, tmp_path):
    """Sweeps vary `dtype`/`device` like any parameter: checked up front, handed to the loader."""
    import caprese.models.loading as loading
    from caprese.errors import CapreseError
    from caprese.experiment import ExperimentConfig, run_experiment

    with pytest.raises(CapreseError, match="dtype 'bf17'"):
        ExperimentConfig.from_params(dict(dtype="bf17")).check()
    seen = {}

    def fake_load(name, dtype="float32", device="cpu", **kwargs):
        seen.update(dtype=dtype, device=device)
        raise RuntimeError("stop after loading")

    monkeypatch.setattr(loading, "load_model", fake_load)
    # a spec names a GPU that this CPU machine lacks: its values pass (the name parses), and the run
    # itself checks availability where it runs, just before loading (stubbed here)
    monkeypatch.setattr(loading, "check_model_options", lambda *args, **kwargs: None)
    cfg = ExperimentConfig.from_params({"dtype": "bfloat16", "device": "cuda:1", "out_dir": str(tmp_path / "r")})
    with pytest.raises(RuntimeError, match="stop after loading"):
        run_experiment(cfg)
    assert seen == {"dtype": "bfloat16", "device": "cuda:1"}
