"""PEFT export of a Caprese adapter: PeftModel reproduces caprese's unmerged x L R path, caprese
reads the export back exactly, and a native caprese folder is never taken for a PEFT one."""

import copy
import json
import os

import peft  # caprese[eval], installed by `make setup`
import pytest
import torch

from caprese.cli import main
from caprese.distill import CapreseAdapter, MethodChoice
from caprese.distill.peft_export import export_peft, load_peft_model
from caprese.errors import CapreseError
from caprese.methods import apply_method
from caprese.testing import save_tiny_model, tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def trained_adapter(model, base="tiny", layers=(0, 1), rank=3, seed=0):
    adapter = CapreseAdapter.new(model, base, MethodChoice("griffin", 0.5, list(layers)), list(layers), rank)
    generator = torch.Generator().manual_seed(seed)
    for module in adapter.corrections.values():  # a trained-looking path: both factors non-zero
        module.set_factors(
            torch.randn(module.L.shape, generator=generator) * 0.3,
            torch.randn(module.R.shape, generator=generator) * 0.3,
        )
    return adapter


def caprese_logits(model, adapter, ids):
    """caprese's unmerged path on every token over the full FFN: method dense, all tokens generated."""
    with apply_method(model, "dense", layers=adapter.config.layers) as session, torch.inference_mode():
        for layer, module in adapter.corrections.items():
            session.set_correction(layer, module)
        with session.teacher_forced([0] * ids.shape[0]):
            return model(ids).logits


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Phi3ForCausalLM"])
def test_peft_round_trip_matches_caprese(tmp_path, architecture):
    model = tiny_model(architecture)
    adapter = trained_adapter(model)
    ids = torch.randint(3, 90, (2, 11), generator=torch.Generator().manual_seed(1))
    expected = caprese_logits(model, adapter, ids)
    with torch.inference_mode():
        plain = model(ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the path matters

    out = export_peft(adapter, tmp_path / "peft", model=model)
    assert {p.name for p in out.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "caprese_export.json",
    }
    config = peft.PeftConfig.from_pretrained(str(out))
    assert config.peft_type == peft.PeftType.LORA and config.r == 3 and config.lora_alpha == 3

    peft_model = load_peft_model(copy.deepcopy(model), out)
    with torch.inference_mode():
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    back = CapreseAdapter.load(out, model)  # into caprese again: exact
    assert back.config == adapter.config
    for layer, module in adapter.corrections.items():
        assert torch.equal(back.corrections[layer].L, module.L.detach()) and torch.equal(
            back.corrections[layer].R, module.R.detach()
        )


def test_native_folder_is_not_a_peft_folder(tmp_path):
    model = tiny_model()
    folder = trained_adapter(model).save(tmp_path / "adapter")
    assert (folder / "caprese_adapter.json").exists() and not (folder / "adapter_config.json").exists()
    assert json.loads((folder / "caprese_adapter.json").read_text())["format"] == "caprese-adapter"
    with pytest.raises(ValueError) as err:
        peft.PeftConfig.from_pretrained(str(folder))
    message = str(err.value)
    assert "\n" not in message and "adapter_config.json" in message


def test_old_and_foreign_folders(tmp_path):
    model = tiny_model()
    adapter = trained_adapter(model)
    folder = adapter.save(tmp_path / "old")
    config = json.loads((folder / "caprese_adapter.json").read_text())
    config.pop("format")
    (folder / "adapter_config.json").write_text(json.dumps(config))  # written before the rename
    (folder / "caprese_adapter.json").unlink()
    assert CapreseAdapter.load(folder, model).config == adapter.config
    out = export_peft(adapter, tmp_path / "peft", model=model)
    (out / "caprese_export.json").unlink()  # a plain PEFT folder
    with pytest.raises(CapreseError, match="PEFT adapter without caprese's metadata"):
        CapreseAdapter.load(out, model)


def test_export_peft_verb_reads_no_weights(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "model")
    from caprese.models.loading import load_model

    model, _ = load_model(str(base), tokenizer=False)
    adapter = trained_adapter(model, base=str(base), layers=(1,), rank=2)
    adapter.save(tmp_path / "adapter")
    assert main(["export-peft", str(tmp_path / "adapter"), str(tmp_path / "peft")]) == 0
    assert "wrote PEFT LoRA folder" in capsys.readouterr().out
    peft_model = load_peft_model(copy.deepcopy(model), tmp_path / "peft")
    ids = torch.arange(3, 15).reshape(1, -1)
    with torch.inference_mode():
        torch.testing.assert_close(
            peft_model(input_ids=ids).logits, caprese_logits(model, adapter, ids), atol=1e-5, rtol=0
        )
    assert (
        main(
            [
                "eval",
                "--model",
                str(base),
                "--task",
                "toy-math",
                "--samples",
                "1",
                "--max-new-tokens",
                "2",
                "--quiet",
                "--adapter",
                str(tmp_path / "peft"),
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    lora = CapreseAdapter.new(model, str(base), MethodChoice("griffin", 0.5, [0]), [0], 2, kind="lora")
    lora.save(tmp_path / "lora")
    assert main(["export-peft", str(tmp_path / "lora"), str(tmp_path / "x")]) == 2
    assert "only Caprese paths export to PEFT" in capsys.readouterr().err
