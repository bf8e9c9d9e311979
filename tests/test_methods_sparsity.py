"""Measured sparsity on generated tokens, and GRIFFIN's selection, reselection and pruning."""

import pytest
import torch
from test_methods_batching import generate

from caprese.arch import ffn_blocks
from caprese.methods import apply_method, collect_calibration, kept_count
from caprese.methods.forcing import incremental_logits, teacher_forced_batch
from caprese.testing import tiny_model


def random_prompts(n, length, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (length,), generator=g).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def wide_model():
    """D_FF = 256 so a sparsity is measured over many entries."""
    return tiny_model("LlamaForCausalLM", hidden_size=64, intermediate_size=256)


@pytest.fixture(scope="module")
def calibration(wide_model):
    """The dense model's own text (prompt + greedy continuation): the distribution it generates."""
    with torch.inference_mode():
        prompts = random_prompts(8, 16, seed=1)
        texts = [p + c for p, c in zip(prompts, generate(wide_model, prompts))]
        return collect_calibration(
            wide_model, texts, needs={"inputs", "intermediate", "gate_abs", "sample"}, progress=False
        )


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
@pytest.mark.parametrize(
    "name,options",
    [
        ("topk", {}),
        ("cats", {}),
        ("cats", {"threshold_source": "calibration"}),
        ("teal", {}),
        ("teal", {"allocation": "greedy"}),
    ],
    ids=["topk", "cats-prompt", "cats-calibration", "teal-uniform", "teal-greedy"],
)
def test_measured_sparsity_on_generated_tokens_is_the_target(wide_model, calibration, name, options, sparsity):
    prompts = random_prompts(4, 16, seed=2)
    with (
        torch.inference_mode(),
        apply_method(wide_model, name, sparsity=sparsity, calibration=calibration, **options) as session,
    ):
        generate(wide_model, prompts)
        measured = session.measured_sparsity()
    assert abs(measured["overall"] - sparsity) <= 0.02, measured
    for layer, value in measured["per_layer"].items():
        assert abs(value - sparsity) <= 0.03, (layer, measured)


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
def test_griffin_keeps_exactly_k_neurons_per_sequence_and_layer(wide_model, sparsity):
    k = kept_count(sparsity, 256)
    prompts = [p[:n] for p, n in zip(random_prompts(3, 12, seed=4), (12, 5, 8))]
    with torch.inference_mode(), apply_method(wide_model, "griffin", sparsity=sparsity) as session:
        generate(wide_model, prompts)
        for layer in (0, 1):
            kept = session.kept_neurons(layer)
            assert kept.shape == (3, k)
            assert all(len(set(row.tolist())) == k for row in kept)  # k distinct neurons per sequence
            assert not torch.equal(kept[0], kept[1])  # each sequence has its own
        assert session.measured_sparsity()["overall"] == pytest.approx(1 - k / 256)
    assert k == round((1 - sparsity) * 256)


def test_griffin_selection_follows_the_equation_and_ignores_pads():
    """s_j = ‖Z̄[:, j]‖₂ over the prompt's real tokens, written out token by token."""
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    block = ffn_blocks(model)[0]
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    batch = teacher_forced_batch(prompts, [[4], [4]])
    captured = {}
    with torch.inference_mode(), apply_method(model, "griffin", sparsity=0.75, layers=[0]) as session:
        handle = session.wrapper(0).register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
        with session.teacher_forced(batch.prompt_lengths):
            model(**batch.model_inputs())
        handle.remove()
        kept = session.kept_neurons(0)
        for row, prompt in enumerate(prompts):
            x = captured["x"][row, 6 - len(prompt) : 6]  # the real prompt tokens only
            score = torch.zeros(128)
            for token in x:
                z = block.intermediate(token)
                score += (z / z.norm()) ** 2
            expected = torch.topk(score.sqrt(), 32).indices.sort().values
            assert torch.equal(kept[row], expected)


def test_griffin_reselection_updates_scores_with_the_tokens_generated_since_the_last_selection():
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    block = ffn_blocks(model)[0]
    batch = teacher_forced_batch([[5, 6, 7, 8]], [[9, 10, 11, 12, 13, 14, 15]])
    rho = 3
    xs = {}
    with (
        torch.inference_mode(),
        apply_method(model, "griffin", sparsity=0.75, layers=[0], reselect_every=rho) as session,
    ):
        wrapper = session.wrapper(0)
        handle = wrapper.register_forward_pre_hook(lambda m, a: xs.setdefault("x", a[0]))
        with session.teacher_forced(batch.prompt_lengths):
            model(**batch.model_inputs())
        handle.remove()
        state = wrapper.state
        x = xs["x"][0]

        def scores(rows):
            z = block.intermediate(rows)
            return ((z / z.norm(dim=-1, keepdim=True)) ** 2).sum(0).sqrt()

        s = scores(x[:4])
        for segment in range(2):  # 7 generated tokens: two full segments of 3 were reselected
            s_g = scores(x[4 + rho * segment : 4 + rho * (segment + 1)])
            s = torch.sqrt(s * s + s_g * s_g)
        torch.testing.assert_close(state.scores[0], s, rtol=1e-5, atol=1e-6)
        assert int(state.reselections[0]) == 2 and int(state.pending_count[0]) == 1
        assert torch.equal(session.kept_neurons(0)[0], s.topk(32).indices.sort().values)


def test_reselection_changes_generation_and_a_huge_rho_does_not():
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    prompts = random_prompts(2, 6, seed=7)
    with torch.inference_mode():
        with apply_method(model, "griffin", sparsity=0.6):
            fixed = generate(model, prompts)
        with apply_method(model, "griffin", sparsity=0.6, reselect_every=1000):
            never = generate(model, prompts)
        with apply_method(model, "griffin", sparsity=0.6, reselect_every=1):
            every = generate(model, prompts)
    assert never == fixed
    assert every != fixed


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("rho", [None, 2])
def test_pruned_griffin_equals_masked_griffin(batch_size, rho):
    model = tiny_model("LlamaForCausalLM", intermediate_size=128, num_hidden_layers=3)
    prompts = [p[:n] for p, n in zip(random_prompts(3, 9, seed=8), (9, 4, 7))][:batch_size]
    continuations = random_prompts(batch_size, 6, seed=9)
    batch = teacher_forced_batch(prompts, continuations)
    valid = batch.attention_mask.bool()
    with torch.inference_mode():
        with apply_method(model, "griffin", sparsity=0.5, reselect_every=rho) as session:
            masked = incremental_logits(model, batch)
            masked_kept = session.kept_neurons(1)
        with apply_method(model, "griffin", sparsity=0.5, reselect_every=rho, prune=True) as session:
            pruned = incremental_logits(model, batch)
            assert session.wrapper(1).state.pruned.up.shape == (batch_size, 64, 32)
            assert torch.equal(session.kept_neurons(1), masked_kept)
    torch.testing.assert_close(pruned[valid], masked[valid], rtol=0, atol=1e-5)
