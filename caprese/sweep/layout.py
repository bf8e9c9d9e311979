"""Where a sweep's files live, and what they say about a run's state.

    runs/<sweep>/sweep.json               the expanded points (written when a sweep starts)
    runs/<sweep>/<run-id>/params.json     the point's parameters (without out_dir)
    runs/<sweep>/<run-id>/inputs.json     what else it used: the model's weights fingerprint
    runs/<sweep>/<run-id>/run.ipynb       the executed notebook (moved in place when the run ends)
    runs/<sweep>/<run-id>/log.txt         papermill's log and the cells' output, streamed
    runs/<sweep>/<run-id>/metrics.json    written by the notebook itself: the run is done iff it exists
    runs/<sweep>/<run-id>/error.json      written when the run failed (exception, timeout, crash)
    runs/<sweep>/<run-id>/job.json        --launcher slurm: the job running it (a restarted driver re-attaches)
    runs/<sweep>/.submitit/               --launcher slurm: submitit's job scripts, pickles and logs

The state is read from files only, so an interrupted sweep, a second sweep or `caprese collect`
all agree on it without any database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DONE = "done"
FAILED = "failed"
INCOMPLETE = "incomplete"  # started, then interrupted (killed) before it finished or failed
PENDING = "pending"  # listed in sweep.json, never started

MANIFEST = "sweep.json"


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

    def status(self) -> str:
        if self.metrics.exists():
            return DONE
        if self.error.exists():
            return FAILED
        if self.params.exists():
            return INCOMPLETE
        return PENDING

    def promote_partial_notebook(self) -> None:
        """Move the notebook papermill was writing to run.ipynb (one atomic rename)."""
        if self.partial_notebook.exists():
            os.replace(self.partial_notebook, self.notebook)

    def set_aside_metrics(self) -> None:
        """A run that failed after writing metrics.json must not count as done."""
        if self.metrics.exists():
            os.replace(self.metrics, self.failed_metrics)


def run_folders(sweep_dir: str | os.PathLike) -> list[RunFolder]:
    """The run folders of a sweep (those with a params.json), sorted by run id."""
    sweep_dir = Path(sweep_dir)
    return sorted(
        (RunFolder(p.parent) for p in sweep_dir.glob("*/params.json")),
        key=lambda r: r.run_id,
    )
