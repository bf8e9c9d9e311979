"""One loading path for hub ids, local folders and built-in names."""

import json

import pytest
import torch

from caprese.errors import CapreseError
from caprese.models import loading
from caprese.models.loading import load_model, parse_dtype
from caprese.testing import save_tiny_model, tiny_model


def test_folder_loads_through_the_same_path_as_a_hub_id(tmp_path, monkeypatch):
    folder = save_tiny_model(tmp_path / "tiny", "Qwen2ForCausalLM")
    calls = []
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(source, **kwargs):
        calls.append(source)
        return original(source, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    model, tok = load_model(str(folder))
    assert calls == [str(folder)]  # a folder goes straight to from_pretrained, as a hub id does
    assert not model.training and type(model).__name__ == "Qwen2ForCausalLM"
    assert tok.padding_side == "left" and tok.pad_token is not None
    reference = tiny_model("Qwen2ForCausalLM", seed=0)
    ids = torch.tensor([tok("12 + 7")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_hub_id_is_passed_to_from_pretrained_unchanged(monkeypatch):
    assert loading.resolve_source("Qwen/Qwen2.5-0.5B-Instruct") == ("Qwen/Qwen2.5-0.5B-Instruct", {})


def test_missing_folder_is_named():
    with pytest.raises(CapreseError, match="does-not-exist"):
        load_model("./does-not-exist/model")


def test_unsupported_folder_fails_before_weights_load(tmp_path):
    from transformers import BertConfig

    folder = tmp_path / "bert"
    folder.mkdir()
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(folder)  # no weights at all: the check must come first
    with pytest.raises(CapreseError) as err:
        load_model(str(folder))
    assert "BertForMaskedLM" in str(err.value) and "LlamaForCausalLM" in str(err.value)
    assert "\n" not in str(err.value)


def test_dtype_loading(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    model, _ = load_model(str(folder), dtype="bf16", tokenizer=False)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_bad_dtype_is_one_line():
    with pytest.raises(CapreseError, match="'float8'.*float32"):
        parse_dtype("float8")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_text("x")
    with pytest.raises(CapreseError, match="is a file"):
        load_model(str(f))


def test_dtype_names_checked_without_torch_match_the_loader():
    from caprese.config import DTYPE_NAMES
    from caprese.models.loading import DTYPES

    assert tuple(DTYPES) == DTYPE_NAMES
