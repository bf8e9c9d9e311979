"""Ctrl-C during a sweep: no worker outlives the driver, and no new point starts after it."""

import signal
import subprocess
import sys

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
