"""Every supported architecture: the adapter resolves, shapes check, and the FFN recomputed
from the adapter's projections and activation equals the module's own output."""

import pytest
import torch

from caprese.arch import ADAPTERS, adapter_for, ffn_blocks
from caprese.errors import CapreseError
from caprese.testing import TINY_CONFIGS, tiny_config, tiny_model

REQUIRED = [
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
    "GPTNeoXForCausalLM",
]


def test_every_adapter_has_a_tiny_model_and_the_required_ones_exist():
    assert set(REQUIRED) <= set(ADAPTERS.names())
    assert set(ADAPTERS.names()) == set(TINY_CONFIGS)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_ffn_recomputed_from_adapter_parts_matches_module(arch):
    model = tiny_model(arch, seed=1)
    blocks = ffn_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    torch.manual_seed(0)
    x = torch.randn(2, 7, blocks[0].hidden_size)
    with torch.inference_mode():
        for block in blocks:
            expected = block.module(x)
            assert expected.shape == x.shape
            torch.testing.assert_close(block.forward(x), expected, atol=1e-6, rtol=0)
            # eq 1 sliced to every neuron equals the unsliced path (the sliced code path is exercised)
            all_neurons = torch.arange(block.intermediate_size)
            z = block.intermediate(x, all_neurons)
            torch.testing.assert_close(block.output(z, all_neurons), expected, atol=1e-6, rtol=0)
            assert z.shape == (2, 7, block.intermediate_size)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_intermediate_is_the_input_of_down_proj(arch):
    model = tiny_model(arch, seed=2)
    block = ffn_blocks(model)[0]
    seen = {}
    handle = block.down.register_forward_pre_hook(lambda mod, args: seen.setdefault("z", args[0]))
    x = torch.randn(1, 4, block.hidden_size)
    with torch.inference_mode():
        block.module(x)
        handle.remove()
        torch.testing.assert_close(block.intermediate(x), seen["z"], atol=1e-6, rtol=0)


def test_subset_of_neurons_matches_masking():
    block = ffn_blocks(tiny_model("Phi3ForCausalLM"))[1]  # fused gate_up: the slicing must offset the up half
    x = torch.randn(3, block.hidden_size)
    keep = torch.tensor([0, 5, 17, 63])
    with torch.inference_mode():
        z = block.intermediate(x)
        masked = torch.zeros_like(z)
        masked[:, keep] = z[:, keep]
        torch.testing.assert_close(
            block.output(block.intermediate(x, keep), keep), block.output(masked), atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize("model_type", ["bert", "t5"])
def test_unsupported_architecture_fails_in_one_line(model_type):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    with pytest.raises(CapreseError) as err:
        adapter_for(config)
    message = str(err.value)
    assert "\n" not in message
    assert "LlamaForCausalLM" in message and "GPTNeoXForCausalLM" in message
    assert ("Bert" in message) or ("T5" in message) or (model_type in message)


def test_shape_mismatch_is_caught_at_resolution():
    model = tiny_model("LlamaForCausalLM")
    model.config.intermediate_size = 65  # a config that lies about D_FF
    with pytest.raises(CapreseError, match="gate"):
        ffn_blocks(model)


def test_missing_path_is_named():
    from dataclasses import replace

    model = tiny_model("LlamaForCausalLM")
    broken = replace(adapter_for(model), gate="gate_projection")
    with pytest.raises(CapreseError, match="gate_projection"):
        ffn_blocks(model, broken)


def test_tiny_config_names_its_architecture():
    assert tiny_config("Qwen3ForCausalLM").architectures == ["Qwen3ForCausalLM"]
