"""Where a sweep's files live, and what they say about a run's state.

    runs/<sweep>/sweep.json               the expanded points (written when a sweep starts)
    runs/<sweep>/<run-id>/params.json     the point's parameters (without out_dir)
    runs/<sweep>/<run-id>/inputs.json     what else it used: the model's weights fingerprint
    runs/<sweep>/<run-id>/run.ipynb       the executed notebook (moved in place when the run ends)
    runs/<sweep>/<run-id>/log.txt         papermill's log and the cells' output, streamed
    runs/<sweep>/<run-id>/metrics.json    written by the notebook itself (a JSON object)
    runs/<sweep>/<run-id>/COMPLETE        written last by the worker: the sha256 of every result file
    runs/<sweep>/<run-id>/error.json      written when the run failed (exception, timeout, crash)
    runs/<sweep>/<run-id>/job.json        --launcher slurm: the job running it (a restarted driver re-attaches)
    runs/<sweep>/.submitit/               --launcher slurm: submitit's job scripts, pickles and logs

The state is read from files only, so an interrupted sweep, a second sweep, `caprese collect`
and `caprese figures` all agree on it without any database: they all ask `RunFolder.state()`.
A run is done when its metrics.json parses to a non-empty JSON object and, where COMPLETE exists,
every file it lists still has its checksum; a metrics.json that fails either is "damaged": the
sweep runs that point again, collect and figures report it with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..io import write_json

DONE = "done"
FAILED = "failed"
DAMAGED = "damaged"  # metrics.json present but truncated, garbage, or changed since the run finished
INCOMPLETE = "incomplete"  # started, then interrupted (killed) before it finished or failed
PENDING = "pending"  # listed in sweep.json, never started

MANIFEST = "sweep.json"
MARKER = "COMPLETE"
# not results: the log grows and the lock is touched by later sweeps
_UNCHECKED = {MARKER, "log.txt", ".lock"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def params(self) -> Path:
        return self.path / "params.json"

    @property
    def inputs(self) -> Path:
        return self.path / "inputs.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def failed_metrics(self) -> Path:
        # metrics.json of a run that raised after writing it: kept for inspection, but not "done"
        return self.path / "metrics.failed.json"

    @property
    def error(self) -> Path:
        return self.path / "error.json"

    @property
    def notebook(self) -> Path:
        return self.path / "run.ipynb"

    @property
    def partial_notebook(self) -> Path:
        # papermill rewrites its output after every cell, non-atomically: it writes here and the
        # notebook is moved to run.ipynb in one rename when the run ends
        return self.path / ".run.partial.ipynb"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def result_files(self) -> list[Path]:
        """The files a finished run's COMPLETE marker vouches for (hidden and bookkeeping ones aside)."""
        return sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file()
            and p.name not in _UNCHECKED
            and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )

    def mark_complete(self) -> Path:
        """Write COMPLETE (atomically, last): each result file's size and sha256."""
        files = {
            str(p.relative_to(self.path)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in self.result_files()
        }
        return write_json(self.marker, {"files": files})

    def damage(self) -> str:
        """Why the metrics.json of this run cannot be trusted; "" when it can (see the module doc)."""
        try:
            metrics = json.loads(self.metrics.read_text())
        except (OSError, ValueError) as err:
            return f"metrics.json is unreadable ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
        if not isinstance(metrics, dict) or not metrics:
            return (
                f"metrics.json holds {type(metrics).__name__} {json.dumps(metrics)[:40]}, not a JSON object of results"
            )
        if not self.marker.exists():
            return ""  # runs finished before markers existed, or killed between metrics.json and the marker
        try:
            files = json.loads(self.marker.read_text())["files"]
            for name, expected in files.items():
                path = self.path / name
                if not path.is_file():
                    return f"{name} is missing (listed in {MARKER})"
                if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
                    return f"{name} changed since the run finished ({MARKER} checksum differs)"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"{MARKER} is unreadable ({type(err).__name__})"
        return ""

    def state(self) -> tuple[str, str]:
        """(status, reason): the one decision of whether a run is done, shared by sweep, collect
        and figures. The reason says why a run with a metrics.json is DAMAGED."""
        if self.metrics.exists():
            reason = self.damage()
            return (DAMAGED, reason) if reason else (DONE, "")
        if self.error.exists():
            return FAILED, ""
        if self.params.exists():
            return INCOMPLETE, ""
        return PENDING, ""

    def status(self) -> str:
        return self.state()[0]

    def is_done(self) -> bool:
        return self.state()[0] == DONE

    def promote_partial_notebook(self) -> None:
        """Move the notebook papermill was writing to run.ipynb (one atomic rename)."""
        if self.partial_notebook.exists():
            os.replace(self.partial_notebook, self.notebook)

    def set_aside_metrics(self) -> None:
        """A run that failed after writing metrics.json must not count as done."""
        self.marker.unlink(missing_ok=True)
        if self.metrics.exists():
            os.replace(self.metrics, self.failed_metrics)

    def set_aside_damaged(self) -> None:
        """Before a damaged run is run again: keep its metrics.json for inspection, drop its marker."""
        self.marker.unlink(missing_ok=True)
        if self.metrics.exists():
            os.replace(self.metrics, self.path / "metrics.damaged.json")


def run_folders(sweep_dir: str | os.PathLike) -> list[RunFolder]:
    """The run folders of a sweep (those with a params.json), sorted by run id."""
    sweep_dir = Path(sweep_dir)
    return sorted(
        (RunFolder(p.parent) for p in sweep_dir.glob("*/params.json")),
        key=lambda r: r.run_id,
    )
