"""The same sweep under --launcher local, ray (a local 2-CPU Ray cluster shared by the session)
and slurm (submitit's local executor): same run folders and metrics, failure isolation, resume
after the driver is killed, requeue on preemption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from caprese.sweep import DONE, FAILED, INCOMPLETE, RunFolder, load_spec, run_sweep
from caprese.sweep.launchers import JOB_FILE, LauncherOptions, execute_remote
from caprese.sweep.runner import record_failure

TOY = Path(__file__).parent / "notebooks" / "toy_run.ipynb"
REPO = Path(__file__).parent.parent
SLURM_LOCAL = LauncherOptions(submitit_cluster="local", poll_s=0.5)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def write_spec(folder: Path, data: dict, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"notebook": str(TOY), **data}, sort_keys=False))
    return path


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def numbers(run: RunFolder) -> dict:
    """metrics.json without its timestamps."""
    metrics = json.loads(run.metrics.read_text())
    return {k: v for k, v in metrics.items() if k not in ("started", "finished")}


def test_local_ray_and_slurm_make_the_same_runs_and_isolate_a_failing_point(tmp_path, ray_cluster, monkeypatch):
    # relative paths, as `caprese sweep ablations/x.yaml` gives: Ray tasks run in another directory
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, {"base": {"scale": 2}, "zip": {"x": [1, 2, 3], "fail": ["no", "after", "no"]}}, "same")
    spec = Path("same.yaml")
    spec.write_text(spec.read_text().replace(str(TOY), os.path.relpath(TOY, tmp_path)))
    assert not load_spec(spec).notebook.is_absolute()
    launchers = {
        "local": dict(launcher="local", workers=2),
        "ray": dict(launcher="ray"),
        "slurm": dict(launcher="slurm", workers=2, launcher_options=SLURM_LOCAL),
    }
    results = {}
    for name, how in launchers.items():
        runs = tmp_path / f"runs-{name}"
        report = run_sweep(load_spec(spec), runs_dir=runs, progress=False, **how)
        assert not report.ok and (report.count(DONE), report.count(FAILED)) == (2, 1), report.summary()
        assert "failed x=2_fail=after: RuntimeError: asked to fail after writing metrics at x=2" in report.summary()
        folders = {p.name for p in (runs / "same").iterdir() if p.is_dir() and not p.name.startswith(".")}
        done = {
            rid: numbers(RunFolder(runs / "same" / rid))
            for rid in folders
            if RunFolder(runs / "same" / rid).status() == DONE
        }
        bad = RunFolder(runs / "same" / "x=2_fail=after")
        assert (
            bad.status() == FAILED
            and not bad.metrics.exists()
            and json.loads(bad.failed_metrics.read_text())["y"] == 4.0
        )
        assert json.loads(bad.error.read_text())["error"] == "RuntimeError: asked to fail after writing metrics at x=2"
        results[name] = (folders, done)
    assert results["local"] == results["ray"] == results["slurm"]
    assert results["local"][1] == {
        "x=1_fail=no": {"y": 2.0, "detail": {"label": "a", "flag": False, "n_tags": 1}},
        "x=3_fail=no": {"y": 6.0, "detail": {"label": "a", "flag": False, "n_tags": 1}},
    }
    # the Slurm jobs are recorded so a restarted driver re-attaches; done points are not rerun
    assert json.loads((tmp_path / "runs-slurm" / "same" / "x=1_fail=no" / JOB_FILE).read_text())["cluster"] == "local"
    again = run_sweep(load_spec(spec), runs_dir=tmp_path / "runs-ray", progress=False, launcher="ray", only=["x=1"])
    assert [p.run_id for p in again.already_done] == ["x=1_fail=no"] and not again.outcomes


def _driver(spec: Path, runs: Path, *args: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "caprese.commands.sweep",
        str(spec),
        "--runs-dir",
        str(runs),
        "--no-progress",
        "--workers",
        "1",
        *args,
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when_started(proc: subprocess.Popen, run: RunFolder) -> None:
    try:
        wait_for(
            lambda: (run.path / "started.json").exists() or proc.poll() is not None, 240, "the slow point to start"
        )
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ray_driver_killed_mid_sweep_then_resumed(tmp_path, ray_cluster):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path, {"zip": {"x": [1, 2], "sleep_s": [0.0, 12.0]}}, "rkill")
    first, slow = (RunFolder(runs / "rkill" / rid) for rid in ("x=1_sleep_s=0.0", "x=2_sleep_s=12.0"))
    # a second driver joins the session's cluster, as `caprese sweep --launcher ray --address` on a cluster
    _kill_when_started(_driver(spec, runs, "--launcher", "ray", "--address", ray_cluster), slow)
    kernel = json.loads((slow.path / "started.json").read_text())["pid"]
    # Ray kills the dead driver's tasks; their point workers and kernels follow them
    wait_for(lambda: not os.path.exists(f"/proc/{kernel}"), 60, "the killed point's kernel to exit")
    assert first.status() == DONE and slow.status() == INCOMPLETE
    done_at = first.metrics.stat().st_mtime_ns

    report = run_sweep(load_spec(spec), runs_dir=runs, progress=False, launcher="ray")
    assert [p.run_id for p in report.already_done] == [first.run_id]
    assert [(o.point.run_id, o.status) for o in report.outcomes] == [(slow.run_id, DONE)]
    assert first.metrics.stat().st_mtime_ns == done_at and numbers(slow)["y"] == 2.0


def test_slurm_driver_killed_mid_sweep_then_resumed_reattaches_to_its_job(tmp_path):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path, {"zip": {"x": [1, 2, 3], "sleep_s": [0.0, 12.0, 0.0]}}, "skill")
    first, slow, last = (
        RunFolder(runs / "skill" / rid) for rid in ("x=1_sleep_s=0.0", "x=2_sleep_s=12.0", "x=3_sleep_s=0.0")
    )
    _kill_when_started(_driver(spec, runs, "--launcher", "slurm", "--submitit-cluster", "local"), slow)
    job = json.loads((slow.path / JOB_FILE).read_text())
    assert first.status() == DONE and not last.path.exists()  # --workers 1: the third was never submitted
    report = run_sweep(
        load_spec(spec), runs_dir=runs, progress=False, launcher="slurm", workers=1, launcher_options=SLURM_LOCAL
    )
    assert [p.run_id for p in report.already_done] == [first.run_id]
    assert [(o.point.run_id, o.status) for o in report.outcomes] == [(slow.run_id, DONE), (last.run_id, DONE)]
    # the job the killed driver submitted finished the slow point: it was not submitted again
    assert json.loads((slow.path / JOB_FILE).read_text()) == job
    assert numbers(slow)["y"] == 2.0 and numbers(last)["y"] == 3.0


def test_slurm_job_preempted_is_requeued_and_finishes(tmp_path):
    import threading

    runs = tmp_path / "runs"
    spec = write_spec(tmp_path, {"base": {"sleep_s": 6.0}, "grid": {"x": [5]}}, "preempt")
    run = RunFolder(runs / "preempt" / "x=5")
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(
            report=run_sweep(
                load_spec(spec), runs_dir=runs, progress=False, launcher="slurm", launcher_options=SLURM_LOCAL
            )
        )
    )
    thread.start()
    wait_for(lambda: (run.path / "started.json").exists(), 240, "the point to start")
    first_kernel = json.loads((run.path / "started.json").read_text())["pid"]
    controller = json.loads((run.path / JOB_FILE).read_text())["job_id"]
    (task,) = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)  # what Slurm sends a job it preempts (submitit's signal)
    thread.join(300)
    report = box["report"]
    assert [(o.point.run_id, o.status) for o in report.outcomes] == [("x=5", DONE)], report.summary()
    assert json.loads((run.path / "started.json").read_text())["pid"] != first_kernel  # it ran again
    assert numbers(run)["y"] == 5.0


def test_a_node_that_cannot_see_the_runs_dir_fails_its_point_with_one_line(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"grid": {"x": [1]}}, "blind"))
    (point,) = spec.points()
    elsewhere = tmp_path / "not-mounted-here" / "blind"
    outcome = execute_remote(point, elsewhere, spec, "caprese", 60.0, tmp_path)
    assert outcome.status == FAILED and "\n" not in outcome.error
    assert outcome.error.startswith("RunsDirNotVisible: node ") and str(elsewhere / "x=1") in outcome.error
    # the driver, which sees the runs dir, records it
    (tmp_path / "runs" / "blind" / "x=1").mkdir(parents=True)
    record_failure(outcome, tmp_path / "runs" / "blind", time.time())
    assert json.loads(RunFolder(tmp_path / "runs" / "blind" / "x=1").error.read_text())["type"] == "RunsDirNotVisible"
