"""`caprese distill` end to end on a tiny saved model (dataset responses keep it fast)."""

import json

import pytest

from caprese.cli import main
from caprese.testing import save_tiny_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "model")


def test_distill_writes_adapter_metrics_and_spectra(tiny_folder, tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "distill",
            "--model",
            str(tiny_folder),
            "--method",
            "griffin",
            "--sparsity",
            "0.5",
            "--layers",
            "first_half",
            "--rank",
            "3",
            "--samples",
            "8",
            "--stage",
            "layerwise",
            "--responses",
            "dataset",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extra_parameters"] == 2 * 32 * 3  # one layer (first half of 2), L and R
    assert metrics["losses"]["layerwise"].keys() == {"0"}
    spectra = json.loads((out / "spectra.json").read_text())
    assert len(spectra["0"]["singular_values"]) == 3 and spectra["0"]["normalised"][0] == 1.0
    config = json.loads((out / "adapter" / "caprese_adapter.json").read_text())
    assert config["layers"] == [0] and config["rank"] == 3 and config["method"] == "griffin"
    rows = [json.loads(line) for line in (out / "distill_data.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all("Please reason step by step." in r["prompt"] for r in rows)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rank", "0"], "rank 0"),
        (["--rank", "2", "--samples", "0"], "--samples 0"),
        (["--rank", "2", "--stage", "everything"], "stage 'everything'"),
        (["--rank", "2", "--method", "grifin"], "did you mean 'griffin'"),
    ],
)
def test_bad_input_is_one_line(tiny_folder, tmp_path, capsys, flags, message):
    code = main(
        ["distill", "--model", str(tiny_folder), "--responses", "dataset", "--out", str(tmp_path / "x"), *flags]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
