"""The latency benchmark runs every variant on small shapes and reports the bytes-moved limits."""

import json

import pytest

from caprese.bench import ffn_decode_latency
from caprese.cli import main


def test_ffn_latency_reports_each_variant_and_its_limit():
    r = ffn_decode_latency("small", 64, 256, layers=2, repeats=2, rank=8).as_dict()
    assert set(r["ms"]) == {"full", "griffin", "griffin_lora", "caprese_merged"}
    assert all(v > 0 for v in r["ms"].values())
    k = 128
    assert r["bytes_limit"]["griffin"] == pytest.approx(3 * 64 * k / (3 * 64 * 256))
    assert r["bytes_limit"]["caprese_merged"] == pytest.approx((3 * 64 * k + 2 * 64 * 8) / (3 * 64 * 256))
    assert r["ratio_to_full"]["full"] == 1.0


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "latency.json"
    assert (
        main(
            [
                "bench",
                "--shapes",
                "64x256",
                "--dtypes",
                "float32",
                "--layers",
                "1",
                "--repeats",
                "2",
                "--rank",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["ffn_stack"][0]["hidden"] == 64 and "Caprese merged / GRIFFIN" in capsys.readouterr().out


def test_bad_shape_is_one_line(capsys):
    assert main(["bench", "--shapes", "huge"]) == 2
    assert "shape 'huge'" in capsys.readouterr().err
