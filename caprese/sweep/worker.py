"""One sweep point, in its own process: `python -m caprese.sweep.worker RUN_DIR --notebook ...`.

A fresh process per run keeps a hung or crashed kernel from taking other runs with it, and lets
the sweep enforce a timeout by killing it. The worker
  - holds an exclusive lock on the run folder, so two sweeps never execute the same point;
  - dies with the sweep that started it (a killed sweep leaves no orphan runs; the kernel
    notices its parent is gone and exits within a second);
  - executes the notebook with papermill into a hidden partial file, moved to run.ipynb in one
    rename when the run ends: no half-written notebook ever sits at run.ipynb;
  - on failure sets metrics.json aside (a failed run is never "done") and writes error.json;
  - on success writes the COMPLETE marker last (checksums of the run's files, see `layout`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

import papermill
from papermill.exceptions import PapermillExecutionError

from ..io import read_json, write_json
from .layout import RunFolder

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BUSY = 75  # another process holds the run's lock (EX_TEMPFAIL)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_ATTEMPTS = 3
"""Kernel starts per run: a start can fail before any cell runs (jupyter_client picks free ports, then
the kernel binds them; another process starting at the same moment can take one in between, and
the kernel dies with "Address already in use"). Such a failure is retried; a cell's failure never."""
_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def kernel_did_not_start(err: BaseException) -> bool:
    """True for a kernel that died or hung before its first reply (no cell ran: safe to retry)."""
    return (
        isinstance(err, RuntimeError)
        and not isinstance(err, PapermillExecutionError)
        and any(marker in str(err) for marker in _START_FAILURES)
    )


def _execute_notebook(notebook: Path, run: RunFolder, parameters: dict, kernel: str, cwd: Path) -> None:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            papermill.execute_notebook(
                str(notebook),
                str(run.partial_notebook),
                parameters=parameters,
                kernel_name=kernel,
                cwd=str(cwd),
                log_output=True,
                progress_bar=False,
                shutdown_kernel="immediate",  # every cell has run and written its files: no 2-3 s graceful wait
            )
            return
        except RuntimeError as err:
            if attempt == START_ATTEMPTS or not kernel_did_not_start(err):
                raise
            logging.getLogger("caprese.sweep").warning(
                "run %s: the kernel did not start (%s); starting it again (attempt %d of %d)",
                run.run_id, err, attempt + 1, START_ATTEMPTS,
            )  # fmt: skip


def _die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the sweep that started this worker is gone, however it died."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(EXIT_FAILED)

    def watch() -> None:  # for systems without prctl
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(EXIT_FAILED)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _try_lock(path: Path):
    import fcntl  # POSIX only (as ctypes' prctl above is Linux only)

    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle  # the lock lives as long as this file object (and this process)


def _redirect_output(log_path: Path) -> None:
    """Send this process's stdout/stderr (papermill's log, the cells' output) to log.txt."""
    log = open(log_path, "w", buffering=1)
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True
    )


def describe_error(err: BaseException) -> dict:
    """error.json's content: one line for tables, the full traceback for people."""
    if isinstance(err, PapermillExecutionError):
        message = f"{err.ename}: {err.evalue}"
        detail = {"cell": err.exec_count, "traceback": _ANSI.sub("", "\n".join(err.traceback))}
    else:
        message = f"{type(err).__name__}: {err}"
        detail = {"traceback": "".join(traceback.format_exception(err))}
    message = " ".join(message.split())[:500]
    return {"error": message, "type": getattr(err, "ename", type(err).__name__), **detail}


def execute(run_dir: Path, notebook: Path, kernel: str, cwd: Path) -> int:
    run = RunFolder(run_dir)
    lock = _try_lock(run.lock)
    if lock is None:
        print(f"run {run.run_id} is being executed by another process", file=sys.stderr)
        return EXIT_BUSY
    if run.is_done():  # finished by another sweep while this one waited to start it
        return EXIT_OK
    run.set_aside_damaged()  # a damaged metrics.json (truncated, garbage) is run again
    run.error.unlink(missing_ok=True)  # a retry: until it ends, the run is neither done nor failed
    _redirect_output(run.log)
    parameters = {**read_json(run.params), "out_dir": str(run_dir.resolve())}
    started = time.time()
    try:
        _execute_notebook(notebook, run, parameters, kernel, cwd)
        if not run.metrics.exists():
            raise RuntimeError(f"the notebook finished without writing metrics.json into out_dir ({run_dir})")
        if run.damage():
            raise RuntimeError(f"the notebook wrote a damaged result: {run.damage()}")
    except Exception as err:
        run.set_aside_metrics()
        write_json(run.error, {**describe_error(err), "duration_s": round(time.time() - started, 3)})
        run.promote_partial_notebook()
        logging.getLogger("caprese.sweep").error("run %s failed: %s", run.run_id, describe_error(err)["error"])
        return EXIT_FAILED
    run.promote_partial_notebook()
    run.mark_complete()  # last: the checksums of everything the run wrote
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caprese.sweep.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="runs/<sweep>/<run-id>/ holding params.json")
    parser.add_argument("--notebook", type=Path, required=True)
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd())
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    return execute(args.run_dir, args.notebook, args.kernel, args.cwd)


if __name__ == "__main__":
    sys.exit(main())
