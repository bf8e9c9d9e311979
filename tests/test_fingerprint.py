"""The base-model fingerprint covers every weight, ignores dtype and caprese's own modules."""

import pytest
import torch

from caprese.distill.fingerprint import ffn_fingerprint, fingerprint_of, model_fingerprint
from caprese.testing import tiny_model


def _weights(model):
    return dict(model.named_parameters())


@pytest.mark.parametrize(
    "name",
    [
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.norm.weight",
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
    ],
)
def test_any_single_weight_changes_it(name):
    model = tiny_model("LlamaForCausalLM")
    before = model_fingerprint(model)
    with torch.no_grad():
        _weights(model)[name].view(-1)[-1] += 0.5
    assert model_fingerprint(model) != before


def test_the_old_ffn_sample_missed_attention_and_norms():
    model = tiny_model("LlamaForCausalLM")
    before = ffn_fingerprint(model)
    with torch.no_grad():
        _weights(model)["model.layers.0.self_attn.v_proj.weight"].add_(0.1)
        _weights(model)["model.norm.weight"].add_(0.1)
    assert ffn_fingerprint(model) == before  # why the scheme changed


def test_fp32_and_bf16_copies_agree_and_the_model_is_untouched():
    model = tiny_model("Qwen2ForCausalLM")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    as_bf16 = tiny_model("Qwen2ForCausalLM").to(torch.bfloat16)
    assert model_fingerprint(model) == model_fingerprint(as_bf16)
    assert all(torch.equal(original[k], v) and v.dtype == original[k].dtype for k, v in model.state_dict().items())


def test_an_applied_method_or_attached_path_does_not_change_it():
    from caprese.methods import apply_method

    model = tiny_model("LlamaForCausalLM")
    before = model_fingerprint(model)
    with apply_method(model, "griffin", 0.5, "all", progress=False):
        assert model_fingerprint(model) == before


def test_a_stored_legacy_value_is_checked_with_its_own_scheme():
    model = tiny_model("LlamaForCausalLM")
    legacy = ffn_fingerprint(model)
    assert fingerprint_of(model, like=legacy) == legacy
    assert fingerprint_of(model, like=model_fingerprint(model)).startswith("all-bf16:")
    assert fingerprint_of(model) == model_fingerprint(model)
