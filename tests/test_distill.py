"""Caprese distillation on a tiny model: eq 7 (closed form and trained), eq 8, adapters on disk."""

import hashlib

import pytest
import torch

from caprese.distill.adapter import CapreseAdapter
from caprese.distill.api import distill
from caprese.distill.e2e import E2EConfig
from caprese.distill.layerwise import LayerwiseConfig, NonFiniteLoss
from caprese.distill.teacher import MethodChoice
from caprese.errors import CapreseError
from caprese.testing import sum_pairs, tiny_model, tiny_tokenizer

CHOICE = MethodChoice("griffin", 0.5, "all")


def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("LlamaForCausalLM", num_hidden_layers=3, seed=4, initializer_range=0.2)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return model, tok, sum_pairs(24)


def test_closed_form_ridge_trades_fit_for_smaller_factors(setup):
    """Ridge 0 is eq 7's exact minimiser; the default ridge fits a little worse with smaller L·R."""
    model, tok, rows = setup

    def fit(ridge):
        return distill(
            model,
            tok,
            rows,
            CHOICE,
            rank=4,
            stage="closed_form",
            layerwise=LayerwiseConfig(ridge=ridge),
            progress=False,
        )

    exact, ridged = fit(0.0), fit(LayerwiseConfig.ridge)
    for layer in exact.config.layers:
        e, r = exact.config.final_losses["layerwise"][str(layer)], ridged.config.final_losses["layerwise"][str(layer)]
        assert e["loss"] <= r["loss"] * (1 + 1e-6)
        norm = lambda adapter, layer=layer: float(
            (adapter.corrections[layer].L @ adapter.corrections[layer].R).detach().norm()
        )  # noqa: E731
        assert norm(ridged) < norm(exact)
    with pytest.raises(CapreseError, match="ridge -1"):
        distill(
            model, tok, rows, CHOICE, rank=4, stage="closed_form", layerwise=LayerwiseConfig(ridge=-1.0), progress=False
        )


def logits_under(model, tok, adapter_or_choice, text="Q: 12 + 7 = 19 then 4"):
    ids = torch.tensor([tok(text)["input_ids"]])
    with adapter_or_choice.apply(model, tok) as session, torch.inference_mode():
        with session.teacher_forced([6]):
            return model(ids).logits


def test_layerwise_trains_down_and_closed_form_is_no_worse(setup):
    model, tok, rows = setup
    before = weights_hash(model)
    trained = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="layerwise",
        layerwise=LayerwiseConfig(epochs=6, batch_size=6, lr=1e-2),
        progress=False,
    )
    closed = distill(model, tok, rows, CHOICE, rank=4, stage="closed_form", progress=False)
    assert weights_hash(model) == before  # originals bit-identical
    for layer in map(str, trained.config.layers):
        epochs = trained.config.final_losses["layerwise_epochs"][layer]
        assert epochs[-1] < epochs[0]
        t, c = trained.config.final_losses["layerwise"][layer], closed.config.final_losses["layerwise"][layer]
        assert t["loss"] < t["loss_without_path"]
        assert c["loss"] <= t["loss"] * (1 + 1e-6)
        assert c["loss"] < c["loss_without_path"]


def _in_memory_layerwise(teacher, n, layers, hidden, config):
    """The straightforward eq-7 loop (what train_layerwise computed before it streamed): every batch's
    (x, residual) gathered in memory, one mean-loss Adam step per layer per batch."""
    from caprese.distill.correction import LowRankCorrection
    from caprese.distill.optim import adam_with_linear_schedule

    corrections = {layer: LowRankCorrection(hidden, config.rank, seed=config.seed + layer) for layer in layers}
    batches = [list(range(s, min(s + config.batch_size, n))) for s in range(0, n, config.batch_size)]
    optimizers = {
        layer: adam_with_linear_schedule(
            c.parameters(), config.lr, len(batches) * config.epochs, config.warmup_fraction
        )
        for layer, c in corrections.items()
    }
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        for key in torch.randperm(len(batches), generator=generator).tolist():
            residuals = teacher(batches[key])
            for layer in layers:
                x, y = residuals[layer]
                loss = (y - corrections[layer](x)).pow(2).sum(-1).mean()
                optimizer, scheduler = optimizers[layer]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
    return corrections


def test_streamed_layerwise_equals_the_in_memory_loop_and_replays_from_disk(setup, tmp_path, monkeypatch):
    """Streaming micro-batches (gradients accumulated) gives the in-memory result to fp tolerance;
    replaying the first epoch from the disk spill gives exactly what rerunning the teacher gives,
    with one teacher pass per batch instead of one per batch per epoch; the spill folder is removed."""
    import tempfile

    from caprese.distill.batches import tokenize_pairs
    from caprese.distill.layerwise import train_layerwise
    from caprese.distill.teacher import Teacher

    model, tok, rows = setup
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    teacher = Teacher(model, CHOICE, tokenize_pairs(tok, rows), tok.pad_token_id, micro_batch=4)
    calls = []
    stream = teacher.stream
    monkeypatch.setattr(teacher, "stream", lambda indices, sink: (calls.append(list(indices)), stream(indices, sink)))
    config = LayerwiseConfig(rank=4, epochs=3, batch_size=10, lr=1e-2)
    hidden = model.config.hidden_size
    spilled = train_layerwise(teacher, len(rows), [0, 1, 2], hidden, config, progress=False).corrections
    assert len(calls) == 3  # 24 samples in batches of 10: each batch through the teacher once
    assert list(tmp_path.iterdir()) == []
    calls.clear()
    config.cache_gib = 0.0
    rerun = train_layerwise(teacher, len(rows), [0, 1, 2], hidden, config, progress=False).corrections
    assert len(calls) == 9
    reference = _in_memory_layerwise(teacher, len(rows), [0, 1, 2], hidden, config)
    for layer in (0, 1, 2):
        assert torch.equal(spilled[layer].L, rerun[layer].L) and torch.equal(spilled[layer].R, rerun[layer].R)
        torch.testing.assert_close(spilled[layer].R, reference[layer].R, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(spilled[layer].L, reference[layer].L, rtol=1e-4, atol=1e-6)
        assert spilled[layer].R.abs().max() > 0


def test_r_starts_at_zero_so_an_untrained_adapter_changes_nothing(setup):
    model, tok, _ = setup
    fresh = CapreseAdapter.new(model, "tiny", CHOICE, [0, 1, 2], rank=4)
    torch.testing.assert_close(logits_under(model, tok, fresh), logits_under(model, tok, CHOICE), atol=0, rtol=0)


def test_e2e_reduces_its_loss_and_leaves_weights_alone(setup):
    model, tok, rows = setup
    before = weights_hash(model)
    adapter = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="e2e",
        # every row trained on: this checks the training loss itself (the split has its own tests)
        layerwise=LayerwiseConfig(epochs=2, batch_size=8, lr=2e-3, validation_fraction=0.0),
        e2e=E2EConfig(epochs=4, batch_size=8, lr=1e-3),
        progress=False,
    )
    losses = adapter.config.final_losses
    assert losses["e2e_epochs"][-1] < losses["e2e_initial"]
    assert weights_hash(model) == before
    assert all(p.requires_grad for p in model.parameters())  # requires_grad restored


def test_save_load_apply_reproduces_logits_and_refuses_other_models(setup, tmp_path):
    model, tok, rows = setup
    adapter = distill(model, tok, rows, CHOICE, rank=4, stage="closed_form", base_model="tiny-seed-4", progress=False)
    adapter.save(tmp_path / "adapter")
    loaded = CapreseAdapter.load(tmp_path / "adapter", model)
    assert loaded.config.base_model == "tiny-seed-4" and loaded.config.data_hash == adapter.config.data_hash
    torch.testing.assert_close(logits_under(model, tok, loaded), logits_under(model, tok, adapter), atol=0, rtol=0)
    assert not torch.equal(logits_under(model, tok, loaded), logits_under(model, tok, CHOICE))
    other = tiny_model("LlamaForCausalLM", num_hidden_layers=3, seed=5, initializer_range=0.2)
    with pytest.raises(CapreseError, match="not this one") as err:
        CapreseAdapter.load(tmp_path / "adapter", other)
    assert "\n" not in str(err.value)
    wider = tiny_model("LlamaForCausalLM", num_hidden_layers=3, hidden_size=48)
    with pytest.raises(CapreseError, match="hidden_size"):
        CapreseAdapter.load(tmp_path / "adapter", wider)


@pytest.mark.parametrize("rank", [0, -1, 33, 2.5])
def test_bad_rank(setup, rank):
    model, tok, rows = setup
    with pytest.raises(CapreseError, match="rank"):
        distill(model, tok, rows, CHOICE, rank=rank, progress=False)


def test_no_samples(setup):
    model, tok, _ = setup
    with pytest.raises(CapreseError, match="samples 0"):
        distill(model, tok, [], CHOICE, rank=2, progress=False)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_factors(setup):
    model, tok, rows = setup
    with pytest.raises(NonFiniteLoss, match="loss became") as err:
        distill(
            model,
            tok,
            rows,
            CHOICE,
            rank=4,
            stage="layerwise",
            layerwise=LayerwiseConfig(epochs=50, batch_size=4, lr=1e30, warmup_fraction=0.0),
            progress=False,
        )
    kept = err.value.result.corrections
    assert all(torch.isfinite(c.L).all() and torch.isfinite(c.R).all() for c in kept.values())


def test_gradient_checkpointing_gives_the_same_training(setup):
    model, tok, rows = setup
    runs = []
    for checkpointing in (False, True):
        start = distill(model, tok, rows[:8], CHOICE, rank=2, stage="closed_form", progress=False)
        adapter = distill(
            model,
            tok,
            rows[:8],
            CHOICE,
            rank=2,
            stage="e2e",
            start_from=start,
            e2e=E2EConfig(epochs=2, batch_size=4, lr=1e-3, gradient_checkpointing=checkpointing),
            progress=False,
        )
        runs.append(adapter.config.final_losses["e2e_epochs"])
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)
    assert not getattr(model, "is_activation_checkpointing", False)


def test_lora_baseline_matches_caprese_parameters_trains_and_round_trips(setup, tmp_path):
    from caprese.distill.lora import LoraPath, lora_rank_for

    model, tok, rows = setup
    before = weights_hash(model)
    lora = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=8,
        stage="layerwise",
        kind="lora",
        layerwise=LayerwiseConfig(epochs=4, batch_size=6, lr=1e-2),
        progress=False,
    )
    caprese_params = 2 * 32 * 8 * 3
    assert lora.config.kind == "lora" and lora.config.rank == lora_rank_for(32, 64, 8) == 2
    assert abs(lora.parameter_count() - caprese_params) <= 3 * (32 + 64) * 3 // 2  # nearest r'
    for layer, epochs in lora.config.final_losses["layerwise_epochs"].items():
        assert epochs[-1] < epochs[0], layer
    assert weights_hash(model) == before
    lora.save(tmp_path / "lora")
    loaded = CapreseAdapter.load(tmp_path / "lora", model)
    assert isinstance(loaded.corrections[0], LoraPath)
    torch.testing.assert_close(logits_under(model, tok, loaded), logits_under(model, tok, lora), atol=0, rtol=0)
    with pytest.raises(CapreseError, match="merged inference"):
        with loaded.apply(model, tok, merged=True):
            pass


def test_lora_baseline_is_griffin_only(setup):
    model, tok, rows = setup
    with pytest.raises(CapreseError, match=r"LoRA baseline is not defined for method 'cats' \(choose from: griffin\)"):
        distill(model, tok, rows, MethodChoice("cats", 0.5, "all"), rank=4, kind="lora", progress=False)


def test_ffn_error_with_the_adapter_counts_its_path(setup):
    """The per-layer error 'with Caprese' must include x L R: the closed form lowers it on its own data."""
    from caprese.distill.batches import tokenize_pairs
    from caprese.distill.ffn_error import ffn_errors

    model, tok, rows = setup
    adapter = distill(
        model, tok, rows, CHOICE, rank=8, stage="closed_form", layerwise=LayerwiseConfig(ridge=0.0), progress=False
    )
    errors = ffn_errors(model, CHOICE, tokenize_pairs(tok, rows), tok.pad_token_id, adapter, tokenizer=tok)
    for layer in adapter.config.layers:
        method, caprese = errors[str(layer)]["method"], errors[str(layer)]["caprese"]
        assert caprese["tokens"] == method["tokens"] > 0
        assert caprese["relative_l2"] < method["relative_l2"]
