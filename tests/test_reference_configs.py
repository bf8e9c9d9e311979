"""Parameter counts of the shipped dimension-only configs equal the public totals."""

import pytest

from caprese.arch import ffn_blocks
from caprese.models.reference import REFERENCE_CONFIGS, meta_model

PUBLIC_TOTALS_B = {"Llama-3.1-8B": 8.03, "Qwen2.5-14B": 14.77, "Gemma-2-2B": 2.61, "Qwen2.5-0.5B": 0.49}


@pytest.mark.parametrize("name", sorted(PUBLIC_TOTALS_B))
def test_meta_model_has_the_public_parameter_count(name):
    model = meta_model(name)
    total = sum(p.numel() for p in model.parameters())
    assert round(total / 1e9, 2) == PUBLIC_TOTALS_B[name]
    assert all(p.is_meta for p in model.parameters())


def test_every_reference_config_resolves_through_its_adapter():
    for name in REFERENCE_CONFIGS.names():
        blocks = ffn_blocks(meta_model(name))
        assert blocks[0].intermediate_size > blocks[0].hidden_size
