"""A stateful method's prefill reads the prompt's activations from the original FFN's own forward:
the same result as recomputing them, one pass through the input projections, no hooks left behind;
CATS's batched per-prompt quantile equals the per-sequence one exactly."""

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.methods import apply_method, distributions
from caprese.methods.cats import Cats
from caprese.methods.distributions import EmpiricalDistribution, prompt_magnitude_quantiles
from caprese.methods.griffin import Griffin
from caprese.testing import tiny_model
from tests.test_methods_exact import random_batch

CASES = [
    (arch, name, options)
    for arch in ("LlamaForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM", "Gemma2ForCausalLM")
    for name, options in (("griffin", {}), ("griffin", {"prune": True, "reselect_every": 3}), ("cats", {}))
]


def _logits(model, name, options, batch, capture: bool, monkeypatch):
    with monkeypatch.context() as patch:
        if not capture:
            patch.setattr(Griffin, "prepare_point", None)
            patch.setattr(Cats, "prepare_point", None)
        with torch.inference_mode(), apply_method(model, name, 0.5, progress=False, **options) as session:
            with session.teacher_forced(batch.prompt_lengths):
                return model(**batch.model_inputs()).logits


@pytest.mark.parametrize("arch,name,options", CASES, ids=[f"{a[:-11]}-{n}-{len(o)}" for a, n, o in CASES])
def test_captured_prompt_activations_give_the_recomputed_result(arch, name, options, monkeypatch):
    model = tiny_model(arch, intermediate_size=96, num_hidden_layers=2)
    batch = random_batch()
    captured = _logits(model, name, options, batch, True, monkeypatch)
    recomputed = _logits(model, name, options, batch, False, monkeypatch)
    assert torch.equal(captured, recomputed)


@pytest.mark.parametrize("name", ["griffin", "cats"])
def test_prefill_runs_the_input_projections_once_and_leaves_no_hooks(name):
    model = tiny_model("LlamaForCausalLM", intermediate_size=96, num_hidden_layers=2)
    blocks = ffn_blocks(model)
    calls = []
    handles = [b.gate.register_forward_hook(lambda *a, i=b.index: calls.append(i)) for b in blocks]
    ids = torch.randint(3, 96, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), apply_method(model, name, 0.5, progress=False):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))  # a plain prefill
        assert sorted(calls) == [0, 1]  # the original FFN only; prepare read its activations
        assert all(not b.act._forward_hooks and not b.down._forward_pre_hooks for b in blocks)
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("chunk", [None, 9 * 16, 2 * 9 * 16], ids=["one-chunk", "row-by-row", "two-rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_prompt_quantiles_equal_each_prompts_own(dtype, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(distributions, "QUANTILE_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(0)
    values = torch.randn(5, 9, 16, generator=g).round(decimals=1).to(dtype)  # signed, ties included
    mask = torch.zeros(5, 9, dtype=torch.bool)
    for b, (start, stop) in enumerate([(0, 9), (4, 9), (8, 9), (2, 5), (0, 1)]):
        mask[b, start:stop] = True
    for q in (0.05, 0.5, 0.7, 0.95, 1.0):
        got = prompt_magnitude_quantiles(values, mask, q)
        want = torch.tensor([EmpiricalDistribution(values[b][mask[b]].abs()).quantile(q) for b in range(5)])
        assert got.dtype == torch.float32
        assert torch.equal(got, want), q
