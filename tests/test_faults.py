"""Injected faults: damaged results, interrupted writes, the umask. Each asserts that nothing is
reported done that is not whole, and that an earlier result survives an interrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caprese import cli
from caprese.errors import CapreseError
from caprese.figures.results import load_results
from caprese.io import staged_folder, write_json
from caprese.sweep import collect_rows
from caprese.sweep.layout import DAMAGED, DONE, RunFolder

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "notebooks" / "toy_run.ipynb"

DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "garbage": lambda p: p.write_bytes(b"\x00\xff not json at all"),
    "empty": lambda p: p.write_text(""),
    "not an object": lambda p: p.write_text("[1, 2, 3]"),
    "empty object": lambda p: p.write_text("{}"),
}


def _finished_run(folder: Path, metrics: dict, marker: bool = True) -> RunFolder:
    run = RunFolder(folder)
    folder.mkdir(parents=True)
    write_json(run.params, {"x": 1})
    write_json(run.metrics, metrics)
    (folder / "samples.jsonl").write_text('{"a": 1}\n')
    if marker:
        run.mark_complete()
    return run


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_sweep_collect_and_figures_agree_on_a_damaged_run(damage, tmp_path):
    good = _finished_run(tmp_path / "runs" / "s" / "good", {"y": 1.0})
    bad = _finished_run(tmp_path / "runs" / "s" / "bad", {"y": 2.0})
    DAMAGE[damage](bad.metrics)
    assert good.state() == (DONE, "") and bad.state()[0] == DAMAGED
    rows = {row["run_id"]: row for row in collect_rows(tmp_path / "runs" / "s")}
    assert rows["good"]["status"] == DONE and rows["bad"]["status"] == DAMAGED and rows["bad"]["error"]
    results = load_results(tmp_path / "runs")
    assert [run.run_id for run in results.runs] == ["good"]
    assert [(name, status) for name, status, _ in results.skipped] == [("s/bad", DAMAGED)]
    assert "metrics.json" in results.skipped[0][2]


def test_a_result_file_changed_after_the_run_is_damaged_by_its_checksum(tmp_path):
    run = _finished_run(tmp_path / "r", {"y": 1.0})
    (run.path / "samples.jsonl").write_text('{"a": 2}\n')  # same size, other content
    status, reason = run.state()
    assert status == DAMAGED and "samples.jsonl" in reason and "checksum" in reason
    (run.path / "samples.jsonl").unlink()
    assert "missing" in run.state()[1]


def test_figures_names_every_run_it_skipped(tmp_path, capsys):
    runs = tmp_path / "runs"
    _finished_run(runs / "rank" / "bad", {"y": 1.0})
    DAMAGE["truncated"](runs / "rank" / "bad" / "metrics.json")
    failed = RunFolder(runs / "rank" / "failed")
    failed.path.mkdir()
    write_json(failed.params, {"x": 2})
    write_json(failed.error, {"error": "RuntimeError: boom"})
    code = cli.main(["figures", "--runs", str(runs), "--out", str(tmp_path / "figs")])
    out = capsys.readouterr().out
    assert code == 1  # a damaged input is an error, not a silent gap
    assert f"skipped run {runs / 'rank' / 'bad'}: damaged: metrics.json is unreadable" in out
    assert f"skipped run {runs / 'rank' / 'failed'}: failed: RuntimeError: boom" in out


@pytest.mark.slow
def test_a_damaged_point_is_run_again_by_the_sweep(tmp_path, capsys):
    from caprese.commands import sweep as sweep_command

    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump({"notebook": str(TOY), "base": {"scale": 2}, "grid": {"x": [1]}}))
    args = [str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert sweep_command.main(args) == 0
    run = RunFolder(tmp_path / "runs" / "demo" / "x=1")
    assert run.marker.exists() and run.is_done()
    DAMAGE["truncated"](run.metrics)
    capsys.readouterr()
    assert sweep_command.main([*args, "--dry-run"]) == 0
    assert "damaged    x=1  (metrics.json is unreadable" in capsys.readouterr().out
    assert sweep_command.main(args) == 0
    assert "0 already done, 1 ran (1 done, 0 failed)" in capsys.readouterr().out
    assert run.is_done() and json.loads(run.metrics.read_text())["y"] == 2.0
    assert (run.path / "metrics.damaged.json").exists()  # kept for inspection
    assert collect_rows(tmp_path / "runs" / "demo")[0]["status"] == DONE


def test_results_keep_the_users_umask(tmp_path):
    from caprese.distill.adapter_io import WEIGHTS

    old = os.umask(0o022)
    try:
        assert (write_json(tmp_path / "a.json", {}).stat().st_mode & 0o777) == 0o644
        with staged_folder(tmp_path / "out") as stage:
            write_json(stage / "metrics.json", {"y": 1})
        assert ((tmp_path / "out").stat().st_mode & 0o777) == 0o755
        assert ((tmp_path / "out" / "metrics.json").stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777) == 0o600
        os.umask(0o002)
        import torch

        from caprese.distill.adapter_io import AdapterConfig, save_adapter

        config = AdapterConfig("caprese", "m", "f", "llama", 4, 8, [0], 1, "griffin")
        folder = save_adapter(tmp_path / "ad", config, {"layers.0.L": torch.zeros(4, 1)})
        assert ((folder / WEIGHTS).stat().st_mode & 0o777) == 0o664
    finally:
        os.umask(old)


def test_an_interrupted_block_leaves_the_earlier_result_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"rank": 1}')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out) as stage:
            write_json(stage / "distill_data.jsonl", [])
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]
    with staged_folder(out) as stage:
        write_json(stage / "metrics.json", {"rank": 2})
    assert json.loads((out / "metrics.json").read_text()) == {"rank": 2} and (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_sigint_of_distill_into_an_existing_folder_keeps_the_old_result(tmp_path):
    """A real process: distill into a folder holding an earlier result, SIGINT once it is generating."""
    from caprese.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    (out / "adapter").mkdir(parents=True)
    old = {
        "metrics.json": '{"rank": 1, "note": "the old run"}',
        "distill_data.jsonl": '{"old": 1}\n',
        "adapter/adapter_config.json": '{"old": true}',
        "adapter/adapter.safetensors": "old weights",
    }
    for name, text in old.items():
        (out / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "caprese.cli",
            "distill",
            "--model",
            str(model),
            "--method",
            "griffin",
            "--rank",
            "2",
            "--samples",
            "256",
            "--max-new-tokens",
            "64",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.partial-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the staging folder appears when teacher generation starts
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert {name: (out / name).read_text() for name in old} == old  # byte for byte, still the old run
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted(["adapter", *old])
    assert not list(tmp_path.glob(".out.partial-*"))


# ------------------------------------------------------------------ property-based: no traceback

EXPERIMENT_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "sparsity": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
        "rank": st.integers(-10, 10_000),
        "samples": st.integers(-5, 5),
        "stage": st.sampled_from(["none", "layerwise", "e2e", "closed_form", "bogus"]),
        "method": st.sampled_from(["dense", "griffin", "cats", "teal", "topk", "griffen"]),
        "layers": st.one_of(st.sampled_from(["all", "first_half", "0,1", "x", "", "-1"]), st.lists(st.integers(-3, 3))),
        "device": st.sampled_from(["cpu", "cuda", "foo", "cuda:-1", "meta", "auto"]),
        "dtype": st.sampled_from(["float32", "bf16", "float8", ""]),
        "temperature": st.floats(allow_nan=True),
        "lr": st.floats(allow_nan=True),
        "batch_size": st.integers(-2, 3),
        "model": st.sampled_from(["toy-math", "toy-mth", "./nowhere", "a/b/c"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPERIMENT_VALUES)
def test_sweep_spec_values_never_raise_anything_but_one_line(values):
    from caprese.sweep.params import check_point_values, notebook_parameters
    from caprese.sweep.spec import SweepSpec

    global _PARAMETERS
    if "_PARAMETERS" not in globals():
        _PARAMETERS = notebook_parameters(REPO / "notebooks" / "experiment.ipynb")
    spec = SweepSpec("fuzz", REPO / "notebooks" / "experiment.ipynb", base=values)
    lines = check_point_values(spec, _PARAMETERS)  # must not raise
    assert all("\n" not in line and "Traceback" not in line for line in lines)
    from caprese.experiment import ExperimentConfig

    try:
        ExperimentConfig.from_params(values).check()
    except CapreseError as err:
        assert "\n" not in str(err)


NUMBERS = st.one_of(
    st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["x", "", "1e3"])
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(layers=NUMBERS, repeats=NUMBERS, rank=NUMBERS, sparsity=NUMBERS, samples=NUMBERS, batch=NUMBERS)
def test_cli_numeric_options_never_traceback(tmp_path, capsys, layers, repeats, rank, sparsity, samples, batch):
    """Any numbers on bench / eval / distill / diagnose: a one-line refusal or (for valid numbers)
    the refusal of the unwritable --out, never a traceback and never any compute."""
    (tmp_path / "afile").write_text("x")
    blocked = str(tmp_path / "afile" / "out")
    cases = [
        [
            "bench",
            "--shapes",
            "16x32",
            "--dtypes",
            "float32",
            "--layers",
            str(layers),
            "--repeats",
            str(repeats),
            "--rank",
            str(rank),
            "--sparsity",
            str(sparsity),
            "--out",
            blocked + "/l.json",
        ],
        [
            "eval",
            "--model",
            "toy-math",
            "--task",
            "toy-math",
            "--samples",
            str(samples),
            "--batch-size",
            str(batch),
            "--temperature",
            str(sparsity),
            "--out",
            blocked,
        ],
        [
            "distill",
            "--model",
            "toy-math",
            "--method",
            "griffin",
            "--rank",
            str(rank),
            "--samples",
            str(samples),
            "--sparsity",
            str(sparsity),
            "--epochs",
            str(layers),
            "--out",
            blocked,
        ],
        [
            "diagnose",
            "--model",
            "toy-math",
            "--data",
            "toy-math",
            "--samples",
            str(samples),
            "--batch-size",
            str(batch),
            "--densities",
            str(sparsity),
            "--out",
            blocked,
        ],
    ]
    for argv in cases:
        try:
            code = cli.main(argv)
        except SystemExit as exit:
            code = exit.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
