"""Compute units from what was measured: sparsity on generated tokens only (a sequence that ended is
not counted while the rest of its batch goes on) and GRIFFIN's reselections as they happen."""

import pytest
import torch

from caprese.methods import apply_method, layer_active_parameters
from caprese.phase import stop_tokens
from caprese.testing import tiny_model

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model("LlamaForCausalLM", hidden_size=64, intermediate_size=256)


def greedy(model, prompts, eos=None):
    ids = torch.tensor(prompts)  # equal lengths: no padding, so a row alone sees the same numbers
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        pad_token_id=0,
        eos_token_id=eos,
        max_new_tokens=NEW_TOKENS,
    )
    return out[:, ids.shape[1] :].tolist()


def early_stopper(model, name="cats", **options):
    """Two prompts and a token that ends the first one's response after 3 tokens but not the second's
    (under method `name`)."""
    g = torch.Generator().manual_seed(5)
    for _ in range(50):
        prompts = torch.randint(3, 96, (2, 6), generator=g).tolist()
        with torch.inference_mode(), apply_method(model, name, sparsity=0.7, **options), stop_tokens([]):
            first, second = greedy(model, prompts)
        eos = first[2]
        if eos not in first[:2] and eos not in second and eos != 0:
            return prompts, eos
    raise AssertionError("no early-stopping pair found")


def measure(model, prompts, eos, name="cats", **options):
    with torch.inference_mode(), apply_method(model, name, sparsity=0.7, **options) as session, stop_tokens([eos]):
        responses = greedy(model, prompts, eos)
        meter = session.wrapper(0).meter
        return responses, meter.counted_tokens(), float(meter.kept["intermediate"]), session.measured_sparsity()


def test_a_sequence_that_ended_is_not_measured_while_its_batch_goes_on(model):
    prompts, eos = early_stopper(model)
    responses, tokens, kept, batched = measure(model, prompts, eos)
    assert responses[0][2] == eos and responses[0][3:] == [0] * (NEW_TOKENS - 3)  # pads after its end
    alone = [measure(model, [p], eos) for p in prompts]
    # alone, the first response stops at its EOS: 2 decode forwards (its 2nd and 3rd tokens)
    assert [a[1] for a in alone] == [2, NEW_TOKENS - 1]
    assert tokens == sum(a[1] for a in alone)
    assert kept == pytest.approx(sum(a[2] for a in alone), abs=2.0)
    weighted = sum(a[1] * a[3]["overall"] for a in alone) / tokens
    assert batched["overall"] == pytest.approx(weighted, abs=1e-3)


def test_the_generation_config_gives_the_stop_tokens_without_a_context(model):
    prompts, eos = early_stopper(model)
    model.generation_config.eos_token_id, saved = eos, model.generation_config.eos_token_id
    try:
        with torch.inference_mode(), apply_method(model, "cats", sparsity=0.7) as session:
            greedy(model, prompts, eos)
            assert session.wrapper(0).meter.counted_tokens() == 2 + NEW_TOKENS - 1
    finally:
        model.generation_config.eos_token_id = saved


def test_griffin_reselections_are_counted_as_they_happen_and_priced_at_the_full_ff1(model):
    rho = 2
    prompts, eos = early_stopper(model, "griffin", reselect_every=rho)
    with torch.inference_mode(), apply_method(model, "griffin", sparsity=0.7, reselect_every=rho) as session:
        with stop_tokens([eos]):
            greedy(model, prompts, eos)
        meter = session.wrapper(0).meter
        # 2 counted tokens -> 1 reselection; 7 -> 3; the ended row reselects no more
        assert float(meter.events["reselection"]) == 1 + 3
        measured = session.measured_active_parameters()
        requested = session.active_parameters()
    d, d_ff, k = 64, 256, 77  # k = round(0.3 * 256)
    per_layer = 3 * d * k + (1 + 3) / 9 * 2 * d * d_ff
    assert measured["ffn_params_active"] == pytest.approx(2 * per_layer)
    assert measured["measured_layers"] == 2
    amortised = layer_active_parameters("griffin", 0.7, d, d_ff, gated=True, reselect_every=rho)
    assert requested["ffn_params_active"] == pytest.approx(2 * (amortised["active"] + amortised["reselection"]))


def test_measured_compute_follows_the_measured_sparsity(model):
    prompts, eos = early_stopper(model)
    with torch.inference_mode(), apply_method(model, "cats", sparsity=0.7) as session, stop_tokens([eos]):
        greedy(model, prompts, eos)
        measured = session.measured_active_parameters()
        sparsity = session.measured_sparsity()["per_layer"]
    d, d_ff = 64, 256
    expected = sum(d * d_ff + 2 * d * (1 - p) * d_ff for p in sparsity.values())
    assert measured["ffn_params_active"] == pytest.approx(expected)
