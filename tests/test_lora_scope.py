"""The LoRA baseline's scope: `kept` (factors on GRIFFIN's kept neurons only) vs `full` (the paper's
literal eq 11: masked weights plus LoRA on the full matrices, so a pruned neuron can come back)."""

import random

import pytest
import torch

from caprese.config import LayerwiseConfig, LoraConfig
from caprese.distill import CapreseAdapter, distill
from caprese.distill.lora import LoraPath, attach_lora, lora_rank_for
from caprese.errors import CapreseError
from caprese.methods import apply_method
from caprese.methods.choice import MethodChoice
from caprese.testing import tiny_model, tiny_tokenizer

D, D_FF = 32, 64
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
PROMPT = 6


@pytest.fixture(scope="module")
def model():
    model = tiny_model("LlamaForCausalLM", seed=4, initializer_range=0.2)
    model.requires_grad_(False)
    return model


def trained_like(scope, seed=1):
    """A LoRA whose B factors have moved off zero, as after some training."""
    path = LoraPath(D, D_FF, 2, True, seed=0, scope=scope)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("B_gate", "B_up", "B_down"):
            getattr(path, name).copy_(torch.randn(getattr(path, name).shape, generator=g) * 0.3)
    return path


def run(model, path, *, perturb_pruned=False, backward=False):
    """Layer 0 under GRIFFIN 50% + `path`; the logits, the pruned neurons and B_up's gradient."""
    with apply_method(model, "griffin", sparsity=0.5, layers=[0]) as session:
        attach_lora(session, {0: path})
        with session.teacher_forced([PROMPT]):
            model(IDS[:, :PROMPT])  # the prefill selects E
        pruned = sorted(set(range(D_FF)) - set(session.kept_neurons(0)[0].tolist()))
        if perturb_pruned:
            with torch.no_grad():
                path.B_up[:, pruned] += 1.0
                path.B_gate[:, pruned] += 1.0
        with torch.set_grad_enabled(backward), session.teacher_forced([PROMPT]):
            logits = model(IDS).logits
        if backward:
            logits[:, PROMPT:].pow(2).sum().backward()
    return logits.detach(), pruned, path.B_up.grad


@pytest.mark.parametrize("scope,reaches", [("full", True), ("kept", False)])
def test_the_gradient_reaches_a_pruned_neuron_only_in_full_scope(model, scope, reaches):
    _, pruned, grad = run(model, trained_like(scope), backward=True)
    assert grad is not None and grad.abs().sum() > 0  # kept neurons train in both scopes
    assert bool(grad[:, pruned].abs().sum() > 0) is reaches


@pytest.mark.parametrize("scope,changes", [("full", True), ("kept", False)])
def test_a_pruned_neurons_factors_change_the_output_only_in_full_scope(model, scope, changes):
    before, _, _ = run(model, trained_like(scope))
    after, _, _ = run(model, trained_like(scope), perturb_pruned=True)
    assert (not torch.equal(before, after)) is changes


def test_both_scopes_start_as_griffin_and_have_the_same_matched_rank(model):
    with apply_method(model, "griffin", sparsity=0.5, layers=[0]) as session, torch.inference_mode():
        with session.teacher_forced([PROMPT]):
            griffin = model(IDS).logits
    for scope in ("kept", "full"):
        fresh = LoraPath(D, D_FF, lora_rank_for(D, D_FF, 8), True, scope=scope)
        with torch.inference_mode():
            logits, _, _ = run(model, fresh)
        torch.testing.assert_close(logits, griffin)
        assert fresh.parameter_count() == 3 * 2 * (D + D_FF)  # r' = round(2·32·8 / (3·96)) = 2


def test_full_scope_trains_saves_and_loads(tmp_path):
    model = tiny_model("LlamaForCausalLM", num_hidden_layers=3, seed=4, initializer_range=0.2)
    tok = tiny_tokenizer()
    rng = random.Random(0)
    rows = [
        {"prompt": f"Q: {rng.randint(1, 50)} + {rng.randint(1, 50)} =", "response": f" {rng.randint(1, 99)}."}
        for _ in range(12)
    ]
    choice = MethodChoice("griffin", 0.5, "first_half")
    layerwise = LayerwiseConfig(epochs=2, batch_size=6, lr=1e-2)
    adapter = distill(
        model,
        tok,
        rows,
        choice,
        rank=8,
        kind="lora",
        lora=LoraConfig(scope="full"),
        layerwise=layerwise,
        progress=False,
    )
    assert adapter.config.lora_scope == "full" and adapter.corrections[0].scope == "full"
    epochs = adapter.config.final_losses["layerwise_epochs"]["0"]
    assert epochs[-1] < epochs[0]
    adapter.save(tmp_path / "lora")
    loaded = CapreseAdapter.load(tmp_path / "lora", model)
    assert loaded.config.lora_scope == "full" and loaded.corrections[0].scope == "full"
    ids = torch.tensor([tok("Q: 12 + 7 = 19")["input_ids"]])
    outputs = []
    for a in (adapter, loaded):
        with a.apply(model, tok) as session, torch.inference_mode(), session.teacher_forced([6]):
            outputs.append(model(ids).logits)
            assert session.wrapper(0).method.describe()["lora_scope"] == "full"
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


def test_bad_scope_is_one_line():
    with pytest.raises(CapreseError, match=r"lora_scope 'all' is not allowed \(choose from: kept, full\)"):
        LoraConfig(scope="all")
    with pytest.raises(CapreseError, match="lora_scope 'everything' is not allowed"):
        LoraPath(D, D_FF, 2, scope="everything")
