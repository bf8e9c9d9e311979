"""Layer-parallel layer-wise distillation (per-layer fits as Ray tasks) gives the serial adapter."""

import pytest

from caprese.distill.api import distill
from caprese.distill.layerwise import LayerwiseConfig
from caprese.distill.parallel import LayerParallel
from caprese.distill.teacher import MethodChoice
from caprese.errors import CapreseError

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def toy():
    import caprese
    from caprese.distill.data import distillation_rows, question_rows

    model, tokenizer = caprese.load_model("toy-math")
    rows = distillation_rows(
        model, tokenizer, question_rows("toy-math", 24, seed=3), responses="dataset", progress=False
    )
    return model, tokenizer, rows


@pytest.mark.parametrize("init", ["random", "closed_form"])
def test_two_ray_workers_give_the_serial_adapter_on_toy_math(toy, ray_cluster, tmp_path, init):
    model, tokenizer, rows = toy
    choice = MethodChoice("griffin", 0.5, "all")
    config = dict(rank=8, epochs=3, batch_size=8, lr=3e-3, init=init, seed=7)

    def fit(parallel):
        return distill(
            model,
            tokenizer,
            rows,
            choice,
            rank=8,
            stage="layerwise",
            layerwise=LayerwiseConfig(**config),
            progress=False,
            layer_parallel=parallel,
        )

    serial, fanned = fit(None), fit(LayerParallel(workers=2))
    assert sorted(fanned.corrections) == sorted(serial.corrections) == list(range(6))
    worst = 0.0
    for layer, c in serial.corrections.items():
        for name in ("L", "R"):
            a, b = getattr(c, name).detach(), getattr(fanned.corrections[layer], name).detach()
            assert a.dtype == b.dtype and a.device == b.device
            worst = max(worst, float((a - b).abs().max()))
    assert worst <= 1e-6, f"layer-parallel adapter differs from the serial one by {worst:g}"
    assert float(serial.corrections[0].R.detach().abs().max()) > 0  # it trained
    for layer, losses in serial.config.final_losses["layerwise_epochs"].items():
        assert fanned.config.final_losses["layerwise_epochs"][layer] == pytest.approx(losses, rel=1e-6)
    print(f"largest difference layer-parallel vs serial: {worst:g}")
    serial.save(tmp_path / "serial")
    fanned.save(tmp_path / "fanned")
    weights = lambda p: next(p.glob("*.safetensors")).read_bytes()  # noqa: E731
    if worst == 0.0:  # on one CPU architecture the arithmetic is the same: so are the bytes
        assert weights(tmp_path / "serial") == weights(tmp_path / "fanned")


def test_bad_layer_parallel_settings_fail_with_one_line():
    with pytest.raises(CapreseError, match="workers 0"):
        LayerParallel(workers=0)
    with pytest.raises(CapreseError, match="gpus -1"):
        LayerParallel(gpus=-1)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ray-address", "auto"], "--ray-address and --layer-parallel-gpus go with --layer-parallel N"),
        (["--layer-parallel", "0"], "layer-parallel workers 0 must be an integer >= 1"),
        (
            ["--layer-parallel", "2", "--stage", "closed_form"],
            "--layer-parallel parallelizes the layer-wise Caprese fit",
        ),
    ],
)
def test_bad_layer_parallel_flags_fail_before_the_model_loads(tmp_path, capsys, flags, message):
    from caprese.cli import main

    code = main(
        [
            "distill",
            "--model",
            str(tmp_path / "no-model-here"),
            "--method",
            "griffin",
            "--sparsity",
            "0.5",
            "--rank",
            "4",
            "--out",
            str(tmp_path / "x"),
            *flags,
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
