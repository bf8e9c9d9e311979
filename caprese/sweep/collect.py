"""`caprese collect runs/<sweep>`: one tidy table, one row per run: its parameters, its metrics
(nested keys flattened as `a.b`) and its status (done / damaged / failed / incomplete / pending;
`RunFolder.state()` decides, as for the sweep and the figures; a damaged run's error says why).

Parameter columns keep the parameter's name; a metric whose name is already taken (by a
parameter, `sweep`, `run_id`, `status` or `error`) becomes `metrics.<name>`. Lists are stored as
JSON text so every cell is a scalar.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from typing import Any

from ..errors import CapreseError
from ..io import atomic_write_bytes, atomic_write_text, read_json
from .layout import DAMAGED, DONE, FAILED, MANIFEST, PENDING, RunFolder, run_folders

BOOKKEEPING = ("sweep", "run_id", "status", "error")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = _cell(value)
    return flat


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _read(path: Path) -> tuple[Any, str]:
    try:
        return read_json(path), ""
    except (OSError, ValueError) as err:
        return None, f"{path.name} is unreadable: {type(err).__name__}: {err}".splitlines()[0]


def _row(sweep: str, run_id: str, run: RunFolder | None, params: dict[str, Any]) -> dict[str, Any]:
    status, error = run.state() if run is not None else (PENDING, "")
    row: dict[str, Any] = {"sweep": sweep, "run_id": run_id, "status": status}
    row.update({key: _cell(value) for key, value in params.items()})
    if status == DONE:
        metrics, error = _read(run.metrics)
        if isinstance(metrics, dict):
            for key, value in flatten(metrics).items():
                row[f"metrics.{key}" if key in row or key in BOOKKEEPING else key] = value
        else:  # changed between state() and this read
            row["status"] = DAMAGED
            error = error or "metrics.json does not hold a mapping"
    elif status == FAILED:
        info, error = _read(run.error)
        if isinstance(info, dict):
            error = str(info.get("error", ""))
    row["error"] = error
    return row


def collect_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run of the sweep in `sweep_dir` (runs listed in sweep.json first, in order)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CapreseError(f"sweep folder {str(sweep_dir)!r} does not exist (run `caprese sweep` first)")
    folders = {run.run_id: run for run in run_folders(sweep_dir)}
    manifest = read_json(sweep_dir / MANIFEST) if (sweep_dir / MANIFEST).exists() else {}
    name = manifest.get("name", sweep_dir.name)
    listed = {point["run_id"]: point["params"] for point in manifest.get("points", [])}
    rows = []
    for run_id in list(listed) + sorted(set(folders) - set(listed)):
        run = folders.get(run_id)
        params = listed.get(run_id)
        if run is not None:
            stored, _ = _read(run.params)
            params = stored if isinstance(stored, dict) else params
        rows.append(_row(name, run_id, run, params or {}))
    if not rows:
        raise CapreseError(f"sweep folder {str(sweep_dir)!r} holds no runs (no */params.json, no {MANIFEST})")
    return rows


def results_frame(rows: list[dict[str, Any]]):
    import pandas as pd  # heavy, and only this table needs it (the sweep layer imports without it)

    return pd.DataFrame(rows)


def _parquet_ready(frame):
    """pyarrow wants one type per column: a column mixing text and numbers becomes text."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            types = {type(v) for v in frame[column] if v is not None and v == v}
            if len(types) > 1:
                frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame


def write_results(rows: list[dict[str, Any]], csv_path: str | Path, *, parquet: bool | None = None) -> list[Path]:
    """Write the table as CSV (and as parquet next to it when pyarrow is installed), atomically."""
    csv_path = Path(csv_path)
    frame = results_frame(rows)
    written = [atomic_write_text(csv_path, frame.to_csv(index=False))]
    if parquet is None:
        parquet = importlib.util.find_spec("pyarrow") is not None
    if parquet:
        buffer = io.BytesIO()
        _parquet_ready(frame).to_parquet(buffer, index=False)
        written.append(atomic_write_bytes(csv_path.with_suffix(".parquet"), buffer.getvalue()))
    return written


def collect(sweep_dir: str | Path, out: str | Path | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Collect a sweep folder into `out` (default: runs/<sweep>/results.csv [+ .parquet])."""
    rows = collect_rows(sweep_dir)
    return rows, write_results(rows, out if out is not None else Path(sweep_dir) / "results.csv")
