"""Ablation sweeps: a YAML spec expands to points; each point runs a parameterized notebook with
papermill in its own process into runs/<sweep>/<run-id>/; `collect` gathers them into one table.

    spec = load_spec("ablations/rank.yaml")
    report = run_sweep(spec, workers=2)        # resumable: done runs are skipped
    rows, paths = collect("runs/rank")         # runs/rank/results.csv (+ .parquet)
"""

from .collect import collect, collect_rows, write_results
from .errors import SweepSpecError
from .layout import DONE, FAILED, INCOMPLETE, PENDING, RunFolder, run_folders
from .params import NotebookParameter, check_spec, notebook_parameters
from .runner import DEFAULT_KERNEL, RunOutcome, SweepReport, plan, run_sweep, run_sweeps
from .spec import Point, SweepSpec, load_spec, run_id, select, spec_from_dict

__all__ = [
    "DEFAULT_KERNEL", "DONE", "FAILED", "INCOMPLETE", "PENDING",
    "NotebookParameter", "Point", "RunFolder", "RunOutcome", "SweepReport", "SweepSpec", "SweepSpecError",
    "check_spec", "collect", "collect_rows", "load_spec", "notebook_parameters", "plan", "run_folders",
    "run_id", "run_sweep", "run_sweeps", "select", "spec_from_dict", "write_results",
]  # fmt: skip
