"""Adding a method is one module: a method registered from this test file (no library edit) runs
through accounting, the CLI (generated flags, misplaced-flag check), eval, distillation and merged
inference, because everything the library asks of a method lives on its class."""

import random
from dataclasses import dataclass, field

import pytest
import torch

from caprese.cli import main
from caprese.distill import CapreseAdapter, distill
from caprese.distill.layerwise import LayerwiseConfig
from caprese.errors import CapreseError
from caprese.io import read_json
from caprese.methods import (
    METHODS,
    LayerShape,
    Method,
    MethodChoice,
    MethodConfig,
    active_ffn_parameters,
    apply_method,
    kept_count,
    register_method,
)
from caprese.registry import check_int
from caprese.testing import save_tiny_model, tiny_model, tiny_tokenizer


@dataclass
class FirstKConfig(MethodConfig):
    offset: int = field(default=0, metadata={"help": "first kept neuron"})

    def validate(self) -> None:
        check_int("offset", self.offset, 0)


class FirstK(Method):
    """Keeps neurons offset .. offset + k - 1 of Z on every generated token (a static structured mask)."""

    config_class = FirstKConfig

    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config) -> float:
        return (shape.inputs + 1) * shape.hidden * kept_count(sparsity, shape.intermediate)

    def efficient(self, x, state, meter=None, count=None):
        k = kept_count(self.sparsity, self.block.intermediate_size)
        keep = torch.zeros(self.block.intermediate_size, dtype=torch.bool, device=x.device)
        keep[self.config.offset : self.config.offset + k] = True
        keep = keep.expand(*x.shape[:-1], -1)
        if meter is not None:
            meter.add("intermediate", keep, count)
        return self.block.output(self.block.intermediate(x) * keep)


@pytest.fixture(scope="module", autouse=True)
def firstk():
    register_method("firstk")(FirstK)
    yield FirstK
    METHODS._items.pop("firstk")  # leave the registry as the other tests expect it
    METHODS._display.pop("firstk")


def test_a_method_without_active_parameters_is_refused_at_registration():
    class NoCount(Method):
        pass

    with pytest.raises(CapreseError, match="must define active_parameters"):
        register_method("nocount")(NoCount)
    assert "nocount" not in METHODS


def test_accounting_and_session_use_the_method_class():
    model = tiny_model()
    params = active_ffn_parameters(model, "firstk", 0.5)
    block_dims = (32, 64)  # tiny_model: D = 32, D_FF = 64, gated
    assert params["ffn_params_active"] == 2 * 3 * block_dims[0] * 32  # 2 layers × 3 projections × D × k
    with apply_method(model, "firstk", 0.5, offset=4) as session:
        assert session.active_parameters()["ffn_params_active"] == params["ffn_params_active"]
        with pytest.raises(CapreseError, match="keeps no neuron set"):
            session.kept_neurons(0)


def test_cli_flags_are_generated_and_eval_runs_the_method(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "model")
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(folder),
        "--task",
        "toy-math",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--method",
        "firstk",
        "--sparsity",
        "0.5",
        "--firstk-offset",
        "3",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    metrics = read_json(out / "metrics.json")
    assert metrics["method"]["method"] == "firstk" and metrics["method"]["config"] == {"offset": 3}
    assert metrics["params"]["method"] == "firstk"
    assert (
        main(
            [
                "eval",
                "--model",
                str(folder),
                "--task",
                "toy-math",
                "--samples",
                "1",
                "--method",
                "griffin",
                "--firstk-offset",
                "3",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "--firstk-offset is a firstk option" in capsys.readouterr().err


def test_distill_and_merged_inference_with_the_default_hooks():
    model = tiny_model(num_hidden_layers=2, seed=3, initializer_range=0.2)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    rng = random.Random(0)
    rows = [
        {"prompt": f"Q: {rng.randint(1, 50)} + {rng.randint(1, 50)} =", "response": f" {rng.randint(1, 99)}."}
        for _ in range(8)
    ]
    config = LayerwiseConfig(epochs=2, batch_size=4, lr=1e-2)
    adapter = distill(
        model, tok, rows, MethodChoice("firstk", 0.5, "all", {"offset": 2}), rank=4, layerwise=config, progress=False
    )
    assert config.rank == LayerwiseConfig.rank  # distill() did not write the run's rank into the caller's config
    losses = adapter.config.final_losses["layerwise"]
    assert all(v["loss"] < v["loss_without_path"] for v in losses.values())
    with pytest.raises(CapreseError, match="LoRA baseline is not defined for method 'firstk'"):
        distill(model, tok, rows, MethodChoice("firstk", 0.5), rank=4, kind="lora", progress=False)
    ids = tok(["Q: 3 + 4 = 7 then"], return_tensors="pt").input_ids
    lengths = torch.tensor([4])
    outputs = []
    for merged in (False, True):  # not mergeable: merged inference is the path beside FF̂, the same outputs
        with adapter.apply(model, tok, merged=merged) as session, torch.no_grad():
            assert type(session.wrapper(0).method) is FirstK
            with session.teacher_forced(lengths):
                outputs.append(model(ids).logits)
    torch.testing.assert_close(outputs[0], outputs[1])
    assert isinstance(adapter, CapreseAdapter)
