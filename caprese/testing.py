"""Tiny random models of every supported family, built from configs in code (no download).

Used by the test-suite and handy for trying a feature on an architecture without its weights.
"""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .errors import CapreseError

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=96)

TINY_CONFIGS = {
    "LlamaForCausalLM": ("LlamaConfig", dict(num_key_value_heads=2)),
    "Qwen2ForCausalLM": ("Qwen2Config", dict(num_key_value_heads=2)),
    "Qwen3ForCausalLM": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=8)),
    "MistralForCausalLM": ("MistralConfig", dict(num_key_value_heads=2)),
    "Gemma2ForCausalLM": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=8)),
    "Gemma3ForCausalLM": ("Gemma3TextConfig", dict(num_key_value_heads=2, head_dim=8)),
    "GemmaForCausalLM": ("GemmaConfig", dict(num_key_value_heads=2, head_dim=8)),
    "Olmo2ForCausalLM": ("Olmo2Config", dict(num_key_value_heads=2)),
    "GraniteForCausalLM": ("GraniteConfig", dict(num_key_value_heads=2)),
    "Phi3ForCausalLM": ("Phi3Config", dict(num_key_value_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "GPTNeoXForCausalLM": ("GPTNeoXConfig", dict()),
}


def tiny_config(architecture: str = "LlamaForCausalLM", **overrides):
    if architecture not in TINY_CONFIGS:
        raise CapreseError(f"no tiny config for {architecture!r} (choose from: {', '.join(TINY_CONFIGS)})")
    config_name, extra = TINY_CONFIGS[architecture]
    config = getattr(transformers, config_name)(**{**TINY, **extra, **overrides})
    config.architectures = [architecture]
    return config


def tiny_model(architecture: str = "LlamaForCausalLM", seed: int = 0, dtype=torch.float32, **overrides):
    """A randomly initialised tiny model in eval mode (deterministic for a seed)."""
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(tiny_config(architecture, **overrides))
    return model.to(dtype).eval()


def tiny_tokenizer(vocab_size: int = TINY["vocab_size"]):
    """A character-level fast tokenizer over printable ASCII that fits the tiny models' vocabulary."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)][: vocab_size - len(specials)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny_model(folder, architecture: str = "LlamaForCausalLM", seed: int = 0):
    """Save a tiny model and tokenizer with `save_pretrained`, as a user's local folder would hold them."""
    model = tiny_model(architecture, seed=seed)
    model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id = 0, 1, 2
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def count_hooks(model: torch.nn.Module) -> int:
    """Every forward / pre-forward / backward hook left on any module of `model`."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_backward_hooks", {}))
        for m in model.modules()
    )


def sum_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` short prompt/response rows ("Q: a + b =" then two numbers) for distillation tests."""
    import random

    rng = random.Random(seed)
    return [
        {
            "prompt": f"Q: {rng.randint(1, 50)} + {rng.randint(1, 50)} =",
            "response": f" {rng.randint(1, 99)} then {rng.randint(1, 99)}.",
        }
        for _ in range(n)
    ]
