import os

import pytest
import torch

# deterministic, quiet, offline: tests never reach a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_llama():
    from caprese.testing import tiny_model

    return tiny_model("LlamaForCausalLM")

