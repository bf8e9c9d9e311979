"""`caprese collect`: one tidy row per run, from run folders alone (no kernel needed)."""

import argparse

import pandas as pd
import pytest

from caprese.commands import collect as collect_command
from caprese.errors import CapreseError
from caprese.io import write_json
from caprese.sweep import collect, collect_rows


def make_sweep(root):
    sweep = root / "runs" / "rank"
    write_json(sweep / "sweep.json", {
        "name": "rank",
        "points": [
            {"run_id": "rank=8", "params": {"method": "griffin", "rank": 8, "layers": [0, 1]}},
            {"run_id": "rank=16", "params": {"method": "griffin", "rank": 16, "layers": [0, 1]}},
            {"run_id": "rank=32", "params": {"method": "griffin", "rank": 32, "layers": [0, 1]}},
            {"run_id": "rank=64", "params": {"method": "griffin", "rank": 64, "layers": [0, 1]}},
        ],
    })  # fmt: skip
    write_json(sweep / "rank=8" / "params.json", {"method": "griffin", "rank": 8, "layers": [0, 1]})
    write_json(
        sweep / "rank=8" / "metrics.json", {"accuracy": 0.5, "rank": 8, "error": {"rel": 0.2, "per_layer": [0.1, 0.3]}}
    )
    write_json(sweep / "rank=16" / "params.json", {"method": "griffin", "rank": 16, "layers": [0, 1]})
    write_json(sweep / "rank=16" / "error.json", {"error": "RuntimeError: out of memory", "type": "RuntimeError"})
    write_json(sweep / "rank=32" / "params.json", {"method": "griffin", "rank": 32, "layers": [0, 1]})
    return sweep  # rank=32 was started and killed; rank=64 never started


def test_rows_hold_params_flattened_metrics_and_status(tmp_path):
    rows = {row["run_id"]: row for row in collect_rows(make_sweep(tmp_path))}
    assert [rows[r]["status"] for r in ("rank=8", "rank=16", "rank=32", "rank=64")] == [
        "done",
        "failed",
        "incomplete",
        "pending",
    ]
    done = rows["rank=8"]
    assert done["sweep"] == "rank" and done["method"] == "griffin" and done["rank"] == 8
    assert done["layers"] == "[0, 1]"  # lists become JSON text: one scalar per cell
    assert done["accuracy"] == 0.5 and done["error.rel"] == 0.2 and done["error.per_layer"] == "[0.1, 0.3]"
    assert done["metrics.rank"] == 8  # a metric named like a parameter keeps both
    assert rows["rank=16"]["error"] == "RuntimeError: out of memory" and done["error"] == ""


def test_collect_writes_csv_and_parquet_atomically(tmp_path):
    sweep = make_sweep(tmp_path)
    rows, paths = collect(sweep)
    assert [p.name for p in paths] == ["results.csv", "results.parquet"]
    csv = pd.read_csv(paths[0])
    assert list(csv.columns[:3]) == ["sweep", "run_id", "status"] and len(csv) == 4
    assert csv.set_index("run_id").loc["rank=8", "accuracy"] == 0.5
    parquet = pd.read_parquet(paths[1])
    assert list(parquet["status"]) == list(csv["status"])
    assert not list(sweep.glob(".*.tmp"))


def test_collect_command_and_its_errors(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    parser = argparse.ArgumentParser()
    collect_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["collect", str(sweep), "--out", str(tmp_path / "table.csv"), "--no-parquet"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "4 runs (1 done, 1 failed, 1 incomplete, 1 pending)" in out
    assert (tmp_path / "table.csv").exists() and not (tmp_path / "table.parquet").exists()
    with pytest.raises(CapreseError, match="does not exist"):
        collect_rows(tmp_path / "runs" / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CapreseError, match="holds no runs"):
        collect_rows(tmp_path / "empty")
