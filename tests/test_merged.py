"""Merged inference (eqs 9-10) equals the unmerged low-rank path, for GRIFFIN with and without
reselection, on gated, fused and non-gated FFNs, in generate and teacher-forced forwards."""

import pytest
import torch

from caprese.distill.adapter import CapreseAdapter
from caprese.distill.merged import MergedFFN, MergedGriffin
from caprese.distill.teacher import MethodChoice
from caprese.testing import tiny_model, tiny_tokenizer


def adapter_for(model, method="griffin", options=None, layers=(0, 1)):
    adapter = CapreseAdapter.new(
        model, "tiny", MethodChoice(method, 0.5, list(layers), options or {}), list(layers), rank=4
    )
    generator = torch.Generator().manual_seed(0)
    for c in adapter.corrections.values():
        with torch.no_grad():
            c.R.copy_(torch.randn(c.R.shape, generator=generator) * 0.3)
    return adapter


def generated_logits(model, tok, context):
    enc = tok(["Q: 12 + 7 =", "Q: 3 * 45 + 1 = 136, then"], return_tensors="pt", padding=True)
    with context as session, torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return torch.stack(out.logits), session


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM"])
@pytest.mark.parametrize("options", [{}, {"reselect_every": 3}])
def test_merged_equals_unmerged_in_generation(arch, options):
    model = tiny_model(arch, num_hidden_layers=4, seed=1, initializer_range=0.2)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    adapter = adapter_for(model, options=options)
    unmerged, _ = generated_logits(model, tok, adapter.apply(model, tok))
    merged, session = generated_logits(model, tok, adapter.apply(model, tok, merged=True))
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    alone, _ = generated_logits(model, tok, adapter.choice.apply(model, tok))
    assert (alone - unmerged).abs().max() > 1e-3  # the path does change the outputs
    wrapper = session.wrapper(0)
    assert isinstance(wrapper.method, MergedGriffin) and wrapper.correction is None
    state = wrapper.state
    assert isinstance(state.pruned, MergedFFN)
    k = wrapper.method.k
    assert state.pruned.up.shape[1] == k + 4 and state.pruned.down.shape[2] == k + 4  # width k + r


def test_merged_equals_unmerged_teacher_forced_and_for_per_token_methods():
    model = tiny_model("LlamaForCausalLM", num_hidden_layers=4, seed=2, initializer_range=0.2)
    tok = tiny_tokenizer()
    ids = torch.tensor([tok("Q: 12 + 7 = 19. 19 * 2 = 38.")["input_ids"]] * 2)
    for method in ("griffin", "cats", "topk"):
        adapter = adapter_for(model, method=method)
        logits = []
        for merged in (False, True):
            with adapter.apply(model, tok, merged=merged) as session, torch.inference_mode():
                with session.teacher_forced([8, 11]):
                    logits.append(model(ids).logits)
        torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
