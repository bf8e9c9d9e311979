"""Distillation holds out a validation split: never trained on, scored after every epoch (eq 7 per
layer, eq 8 end to end), saved with the adapter, and early stopping keeps the best epoch."""

import pytest
import torch

from caprese.config import E2EConfig, LayerwiseConfig
from caprese.distill.api import distill, validation_indices
from caprese.distill.teacher import MethodChoice
from caprese.errors import CapreseError
from caprese.testing import sum_pairs, tiny_model, tiny_tokenizer

CHOICE = MethodChoice("griffin", 0.5, "all")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("LlamaForCausalLM", num_hidden_layers=2, seed=4, initializer_range=0.2)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return model, tok, sum_pairs(20)


def test_split_is_seeded_sized_and_leaves_rows_to_train():
    assert validation_indices(20, 0.25, 0) == validation_indices(20, 0.25, 0)
    assert validation_indices(20, 0.25, 0) != validation_indices(20, 0.25, 1)
    assert len(validation_indices(20, 0.25, 0)) == 5 and len(validation_indices(20, 0.01, 0)) == 1
    assert validation_indices(20, 0.0, 0) == [] and validation_indices(1, 0.5, 0) == []
    with pytest.raises(CapreseError, match="validation_fraction 1.0 is out of range"):
        LayerwiseConfig(validation_fraction=1.0)
    with pytest.raises(CapreseError, match="patience -1 must be an integer >= 0"):
        E2EConfig(patience=-1)


def test_validation_loss_is_recorded_per_epoch(setup):
    model, tok, rows = setup
    adapter = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="e2e",
        layerwise=LayerwiseConfig(epochs=3, batch_size=4, lr=1e-2, validation_fraction=0.2),
        e2e=E2EConfig(epochs=2, batch_size=4, lr=1e-3),
        progress=False,
    )
    losses = adapter.config.final_losses
    assert losses["validation_rows"] == 4 and adapter.config.training["validation"]["rows"] == 4
    for layer in map(str, adapter.config.layers):
        per_epoch = losses["layerwise_validation_epochs"][layer]
        assert len(per_epoch) == 3 and all(v > 0 for v in per_epoch)
        # the final held-out loss is the last epoch's (nothing trained after it)
        assert losses["layerwise_validation"][layer]["loss"] == pytest.approx(per_epoch[-1], rel=1e-4)
        assert (
            losses["layerwise_validation"][layer]["loss"] < losses["layerwise_validation"][layer]["loss_without_path"]
        )
    assert len(losses["e2e_validation_epochs"]) == 2 and losses["e2e_validation_initial"] > 0
    assert "layerwise_stopped_epoch" not in losses  # patience 0: every epoch trains


def test_held_out_rows_are_not_trained_on(setup):
    """The closed form on all rows with a split equals the closed form on the training rows alone."""
    model, tok, rows = setup
    split = LayerwiseConfig(validation_fraction=0.25, seed=3)
    held = set(validation_indices(len(rows), 0.25, 3))
    with_split = distill(model, tok, rows, CHOICE, rank=4, stage="closed_form", layerwise=split, progress=False)
    alone = distill(
        model,
        tok,
        [row for i, row in enumerate(rows) if i not in held],
        CHOICE,
        rank=4,
        stage="closed_form",
        layerwise=LayerwiseConfig(validation_fraction=0.0),
        progress=False,
    )
    assert with_split.config.training["validation"]["indices"] == sorted(held)
    assert with_split.config.training["trained_samples"] == len(rows) - len(held)
    for layer in with_split.config.layers:
        a, b = with_split.corrections[layer], alone.corrections[layer]
        torch.testing.assert_close(a.L @ a.R, b.L @ b.R)
    # and the split changes the fit (the held-out rows would have mattered)
    everything = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="closed_form",
        layerwise=LayerwiseConfig(validation_fraction=0.0),
        progress=False,
    )
    layer = with_split.config.layers[0]
    a, c = with_split.corrections[layer], everything.corrections[layer]
    assert not torch.allclose(a.L @ a.R, c.L @ c.R)


class FakeTeacher:
    """Fixed (x, residual) micro-batches per sample: train_layerwise without a model."""

    def __init__(self, n, layers=(0, 1), hidden=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.data = {
            (i, layer): (torch.randn(5, hidden, generator=g), torch.randn(5, hidden, generator=g))
            for i in range(n)
            for layer in layers
        }
        self.layers = layers

    def stream(self, indices, sink):
        for i in indices:
            for layer in self.layers:
                sink(layer, *self.data[(i, layer)])


def test_early_stopping_stops_and_keeps_the_best_epoch():
    from caprese.distill.layerwise import train_layerwise

    scripted = iter([5.0, 4.0, 4.5, 4.6, 3.0, 2.0])  # best at epoch 2, then two epochs without improvement
    seen = []

    def validate(corrections):
        seen.append({layer: (c.L @ c.R).detach().clone() for layer, c in corrections.items()})
        value = next(scripted)
        return {layer: value for layer in corrections}

    config = LayerwiseConfig(rank=2, epochs=6, batch_size=2, lr=1e-2, patience=2, cache_gib=0.0)
    result = train_layerwise(FakeTeacher(6), 6, [0, 1], 8, config, validate=validate, progress=False)
    assert result.stopped_epoch == 2 and len(seen) == 4  # stopped after epoch 4 of 6
    assert result.validation_losses[0] == [5.0, 4.0, 4.5, 4.6] and len(result.epoch_losses[0]) == 4
    for layer, correction in result.corrections.items():
        torch.testing.assert_close(correction.L @ correction.R, seen[1][layer])  # epoch 2's factors
        assert not torch.allclose(seen[1][layer], seen[3][layer])  # (training had moved on)
    # patience 0: every epoch runs, nothing is rolled back
    scripted = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8])
    seen.clear()
    config = LayerwiseConfig(rank=2, epochs=6, batch_size=2, lr=1e-2, cache_gib=0.0)
    result = train_layerwise(FakeTeacher(6), 6, [0, 1], 8, config, validate=validate, progress=False)
    assert result.stopped_epoch is None and len(seen) == 6


def test_e2e_early_stopping(setup, monkeypatch):
    import caprese.distill.e2e as e2e_module

    model, tok, rows = setup
    scripted = iter([1.0, 0.9, 0.95])  # before training, epoch 1 (best), epoch 2 (worse): stop
    monkeypatch.setattr(e2e_module, "validation_loss", lambda *a, **k: next(scripted))
    adapter = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="e2e",
        layerwise=LayerwiseConfig(epochs=1, batch_size=8, lr=1e-2, validation_fraction=0.25),
        e2e=E2EConfig(epochs=5, batch_size=8, lr=1e-3, patience=1),
        progress=False,
    )
    losses = adapter.config.final_losses
    assert losses["e2e_validation_initial"] == 1.0 and losses["e2e_validation_epochs"] == [0.9, 0.95]
    assert losses["e2e_stopped_epoch"] == 1 and len(losses["e2e_epochs"]) == 2
