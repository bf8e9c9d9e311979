"""The sweep driver without kernels: Ctrl-C (no worker outlives the driver, no new point starts after
it) and several specs in one command (all checked before anything runs)."""

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from caprese.commands import sweep as sweep_command
from caprese.sweep.runner import INTERRUPTED, _Workers, run_point
from caprese.sweep.spec import Point


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_kill_all_stops_the_live_workers():
    live = _Workers(2)
    procs = [_sleeper(), _sleeper()]
    for proc in procs:
        live.add(proc)
    live.kill_all()
    assert [proc.wait(timeout=10) for proc in procs] == [-signal.SIGKILL, -signal.SIGKILL]


def test_a_worker_registered_after_ctrl_c_is_stopped_at_once():
    # a pool thread past its check when Ctrl-C came starts its worker after kill_all ran
    live = _Workers(2)
    live.kill_all()
    proc = _sleeper()
    live.add(proc)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_a_point_picked_up_after_ctrl_c_does_not_start(tmp_path):
    live = _Workers(1)
    live.kill_all()
    point = Point("rank=8", {"rank": 8}, {"rank": 8})
    outcome = run_point(point, tmp_path, spec=None, kernel="python3", timeout=5, cwd=tmp_path, workers=live)
    assert outcome.status == INTERRUPTED
    assert list(tmp_path.iterdir()) == []  # no run folder was created for it


TOY = Path(__file__).parent / "notebooks" / "toy_run.ipynb"


def _spec(folder: Path, name: str, data: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"notebook": str(TOY), **data}, sort_keys=False))
    return path


def test_a_bad_spec_among_several_stops_them_all_before_any_run(tmp_path, capsys):
    good = _spec(tmp_path, "good", {"grid": {"x": [1, 2]}})
    bad = _spec(tmp_path, "bad", {"grid": {"x": [1], "nope": [3]}})
    code = sweep_command.main([str(good), str(bad), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err
    assert not (tmp_path / "runs").exists()  # the good spec's points did not start either


def test_several_specs_are_refused_with_only_or_twice(tmp_path, capsys):
    a, b = _spec(tmp_path, "a", {"grid": {"x": [1]}}), _spec(tmp_path, "b", {"grid": {"x": [2]}})
    runs = str(tmp_path / "runs")
    assert sweep_command.main([str(a), str(b), "--only", "x=1", "--runs-dir", runs]) == 2
    assert "--only selects points of one spec; 2 specs were given" in capsys.readouterr().err
    assert sweep_command.main([str(a), str(a), "--runs-dir", runs]) == 2
    assert "sweep a given twice" in capsys.readouterr().err


def test_several_specs_dry_run_lists_each(tmp_path, capsys):
    a, b = _spec(tmp_path, "a", {"grid": {"x": [1, 2]}}), _spec(tmp_path, "b", {"grid": {"x": [3]}})
    assert sweep_command.main([str(a), str(b), "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "sweep a: 2 points, 0 done, 2 to run" in out and "sweep b: 1 points, 0 done, 1 to run" in out
    listing = out[: out.index("sweep a: 2 points")].splitlines()  # each sweep's header above its own points
    headers = [i for i, line in enumerate(listing) if line.startswith("sweep ")]
    assert [listing[i].split(" ->")[0] for i in headers] == ["sweep a", "sweep b"]
    assert headers[1] - headers[0] == 3 and len(listing) - headers[1] == 2
