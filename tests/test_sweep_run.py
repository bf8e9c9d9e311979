"""Sweeps that execute the small test notebook with papermill (a kernel start costs a few seconds
per run, so each test uses as few points as it can)."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from caprese.commands import sweep as sweep_command
from caprese.sweep import DONE, FAILED, INCOMPLETE, RunFolder, collect_rows, load_spec, run_sweep

TOY = Path(__file__).parent / "notebooks" / "toy_run.ipynb"
REPO = Path(__file__).parent.parent

pytestmark = pytest.mark.slow


def write_spec(folder: Path, data: dict, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"notebook": str(TOY), **data}, sort_keys=False))
    return path


def lock_is_free(run: RunFolder) -> bool:
    with open(run.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def no_temp_files(folder: Path) -> list[Path]:
    """Leftovers of an interrupted atomic write (caprese.io names them .<name>.<random>.tmp)."""
    return [p for p in folder.rglob("*.tmp")]


def test_a_failing_point_is_recorded_while_two_workers_finish_the_others(tmp_path, capsys):
    runs = tmp_path / "runs"
    spec = {"base": {"scale": 2}, "zip": {"x": [1, 2, 3], "fail": ["no", "after", "no"], "sleep_s": [2.0, 2.0, 0.0]}}
    path = write_spec(tmp_path, spec)
    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # a failed point makes the sweep's exit code non-zero
    assert "3 points: 0 already done, 3 ran (2 done, 1 failed)" in out
    assert "failed x=2_fail=after_sleep_s=2.0: RuntimeError: asked to fail after writing metrics at x=2" in out

    sweep = runs / "demo"
    ok1, bad, ok3 = (
        RunFolder(sweep / rid)
        for rid in ("x=1_fail=no_sleep_s=2.0", "x=2_fail=after_sleep_s=2.0", "x=3_fail=no_sleep_s=0.0")
    )
    assert ok1.status() == ok3.status() == DONE and bad.status() == FAILED
    # it raised after writing metrics.json: set aside, so the run does not count as done
    assert not bad.metrics.exists() and json.loads(bad.failed_metrics.read_text())["y"] == 4.0
    assert json.loads(ok3.metrics.read_text())["y"] == 6.0
    assert json.loads(ok1.params.read_text()) == {"scale": 2, "x": 1, "fail": "no", "sleep_s": 2.0}
    error = json.loads(bad.error.read_text())
    assert error["error"] == "RuntimeError: asked to fail after writing metrics at x=2" and error["cell"] == 4
    assert 'raise RuntimeError(f"asked to fail after writing metrics at x={x}")' in error["traceback"]
    for run in (ok1, bad, ok3):
        nb = nbformat.read(run.notebook, as_version=4)  # the executed notebook, complete
        assert nb.metadata.papermill.parameters["out_dir"] == str(run.path.resolve())
        assert "Executing Cell" in run.log.read_text()
        assert not run.partial_notebook.exists()

    # --workers 2: the first two points' notebooks were running at the same time
    started = {run.run_id: json.loads((run.path / "started.json").read_text())["time"] for run in (ok1, bad)}
    ended = {ok1.run_id: json.loads(ok1.metrics.read_text())["finished"], bad.run_id: bad.error.stat().st_mtime}
    assert max(started.values()) < min(ended.values()), "the two runs did not overlap in time"

    # again, for the done points only: nothing runs, nothing is rewritten, exit code 0
    before = {run.run_id: run.metrics.stat().st_mtime_ns for run in (ok1, ok3)}
    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--no-progress", "--only", "x=1", "--only", "x=3"])
    assert code == 0 and "2 points: 2 already done, 0 ran" in capsys.readouterr().out
    assert {run.run_id: run.metrics.stat().st_mtime_ns for run in (ok1, ok3)} == before

    rows = {row["run_id"]: row for row in collect_rows(sweep)}
    assert rows[ok1.run_id]["status"] == DONE and rows[ok1.run_id]["detail.label"] == "a"
    assert rows[bad.run_id]["status"] == FAILED and "asked to fail" in rows[bad.run_id]["error"]


def test_sigkill_mid_sweep_then_resume_loses_nothing_and_reruns_nothing(tmp_path):
    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"zip": {"x": [1, 2], "sleep_s": [0.0, 3.0]}}, name="kill.yaml")
    sweep = runs / "kill"
    first, slow = (RunFolder(sweep / rid) for rid in ("x=1_sleep_s=0.0", "x=2_sleep_s=3.0"))
    cmd = [sys.executable, "-m", "caprese.commands.sweep", str(path), "--runs-dir", str(runs), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # kill it while the second run is inside its notebook (it writes started.json, then sleeps)
        wait_for(
            lambda: (slow.path / "started.json").exists() or proc.poll() is not None, 120, "the second run to start"
        )
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # the worker dies with its sweep, the kernel with its worker
    kernel_pid = json.loads((slow.path / "started.json").read_text())["pid"]
    wait_for(lambda: lock_is_free(slow), 10, "the killed run's worker to exit")
    wait_for(lambda: not pid_alive(kernel_pid), 10, "the killed run's kernel to exit")

    assert first.status() == DONE
    assert slow.status() == INCOMPLETE and not slow.metrics.exists() and not slow.notebook.exists()
    for run in (first,):
        json.loads(run.metrics.read_text())
        nbformat.read(run.notebook, as_version=4)
    assert not no_temp_files(sweep)
    done_at = {run.run_id: run.metrics.stat().st_mtime_ns for run in (first,)}

    report = run_sweep(load_spec(path), runs_dir=runs, progress=False)
    assert [p.run_id for p in report.already_done] == [first.run_id]
    assert [(o.point.run_id, o.status) for o in report.outcomes] == [(slow.run_id, DONE)]
    assert {run.run_id: run.metrics.stat().st_mtime_ns for run in (first,)} == done_at
    assert json.loads(slow.metrics.read_text())["y"] == 2.0
    assert nbformat.read(slow.notebook, as_version=4).metadata.papermill.exception is None
    assert not no_temp_files(sweep) and not slow.partial_notebook.exists()


def test_a_run_past_its_timeout_is_killed_and_recorded(tmp_path):
    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"base": {"sleep_s": 120.0}, "grid": {"x": [1]}, "timeout": 6})
    started = time.time()
    report = run_sweep(load_spec(path), runs_dir=runs, progress=False)
    assert time.time() - started < 60
    (outcome,) = report.outcomes
    run = RunFolder(runs / "demo" / "x=1")
    assert outcome.status == FAILED and "longer than 6 s" in outcome.error
    assert json.loads(run.error.read_text())["type"] == "TimeoutError"
    assert lock_is_free(run)  # the worker is gone
    if (run.path / "started.json").exists():
        kernel_pid = json.loads((run.path / "started.json").read_text())["pid"]
        wait_for(lambda: not pid_alive(kernel_pid), 10, "the timed-out kernel to exit")


def test_two_specs_share_one_pool_of_workers(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = write_spec(tmp_path, {"zip": {"x": [1, 2], "sleep_s": [4.0, 0.0]}}, name="a.yaml")
    b = write_spec(tmp_path, {"zip": {"x": [3], "sleep_s": [0.0]}}, name="b.yaml")
    code = sweep_command.main([str(a), str(b), "--runs-dir", str(runs), "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sweep a: 2 points: 0 already done, 2 ran (2 done, 0 failed)" in out
    assert "sweep b: 1 points: 0 already done, 1 ran (1 done, 0 failed)" in out
    slow, fast = RunFolder(runs / "a" / "x=1_sleep_s=4.0"), RunFolder(runs / "b" / "x=3_sleep_s=0.0")
    assert slow.status() == fast.status() == DONE
    # the worker freed by a's quick point took b's point while a's slow one was still running
    started_b = json.loads((fast.path / "started.json").read_text())["time"]
    assert started_b < json.loads(slow.metrics.read_text())["finished"]
