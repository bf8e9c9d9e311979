"""Distillation holds out a validation split: never trained on, scored after every epoch (eq 7 per
layer, eq 8 end to end), saved with the adapter, and early stopping keeps the best epoch."""

import random

import pytest
import torch

from caprese.config import E2EConfig, LayerwiseConfig
from caprese.distill.api import distill, validation_indices
from caprese.distill.teacher import MethodChoice
from caprese.errors import CapreseError
from caprese.testing import tiny_model, tiny_tokenizer

CHOICE = MethodChoice("griffin", 0.5, "all")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("LlamaForCausalLM", num_hidden_layers=2, seed=4, initializer_range=0.2)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    rng = random.Random(0)
    rows = [
        {
            "prompt": f"Q: {rng.randint(1, 50)} + {rng.randint(1, 50)} =",
            "response": f" {rng.randint(1, 99)} then {rng.randint(1, 99)}.",
        }
        for _ in range(20)
    ]
    return model, tok, rows


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


def test_early_stopping_stops_and_keeps_the_best_epoch(setup):
    model, tok, rows = setup
    # a learning rate this large makes the held-out loss climb after the first epochs
    adapter = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="layerwise",
        layerwise=LayerwiseConfig(epochs=30, batch_size=4, lr=0.3, validation_fraction=0.25, patience=2),
        progress=False,
    )
    losses = adapter.config.final_losses
    per_epoch = losses["layerwise_validation_epochs"]
    ran = len(next(iter(per_epoch.values())))
    assert ran < 30
    stopped = losses["layerwise_stopped_epoch"]
    assert ran == stopped + 2  # two epochs without improvement after the best one
    means = [sum(v[e] for v in per_epoch.values()) / len(per_epoch) for e in range(ran)]
    assert stopped == 1 + min(range(ran), key=means.__getitem__)
    kept = sum(losses["layerwise_validation"][k]["loss"] for k in per_epoch) / len(per_epoch)
    assert kept == pytest.approx(means[stopped - 1], rel=1e-4)  # the best epoch's factors were kept


def test_e2e_early_stopping(setup):
    model, tok, rows = setup
    adapter = distill(
        model,
        tok,
        rows,
        CHOICE,
        rank=4,
        stage="e2e",
        layerwise=LayerwiseConfig(epochs=2, batch_size=4, lr=1e-2, validation_fraction=0.25),
        e2e=E2EConfig(epochs=20, batch_size=4, lr=0.5, patience=1),
        progress=False,
    )
    losses = adapter.config.final_losses
    assert len(losses["e2e_validation_epochs"]) < 20 and "e2e_stopped_epoch" in losses
