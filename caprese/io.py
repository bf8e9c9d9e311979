"""Results are files: every write is atomic (temp file in the same folder, then rename).

Also the one place output locations are checked (`check_output_dir`, `check_output_file`: before
any compute, every verb that writes asks whether it can) and a folder of results is published
whole (`staged_folder`): a run writes into a hidden sibling, moved into place only when it ends,
so an interrupted run leaves an earlier result in that folder as it was. Files keep the user's
umask (mkstemp alone would make them 0600).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import CapreseError, one_line


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path_or_fd: str | os.PathLike | int, *, folder: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (0600/0700) the mode an ordinary open/mkdir would."""
    mode = (0o777 if folder else 0o666) & ~_umask()
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, mode)
    else:
        os.chmod(path_or_fd, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        apply_umask(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a damaged file raises CapreseError (a ValueError) naming it."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except ValueError as err:
        raise CapreseError(f"{str(path)!r} is not valid JSON: {one_line(err)}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    text = "".join(json.dumps(row, sort_keys=True, default=_jsonable) + "\n" for row in rows)
    return atomic_write_text(path, text)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON object per non-empty line; a bad line raises CapreseError naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise CapreseError(f"{str(path)!r} line {number} is not valid JSON: {one_line(err)}") from None
            if not isinstance(row, dict):
                raise CapreseError(
                    f"{str(path)!r} line {number} is {type(row).__name__} {row!r:.40}, not a JSON object"
                )
            rows.append(row)
    return rows


def write_csv(path: str | os.PathLike, rows: list[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV; the header is the union of keys in first-seen order."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_write(folder: Path, what: str) -> None:
    """Create, fill, sync and delete a small file in `folder`: fails on a read-only or full disk."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".caprese-write-check.") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise CapreseError(f"{what} is not writable: {one_line(err)}") from None


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before any compute, an output folder that cannot be written (a file in the way,
    read-only, full disk). Creates nothing: a folder that does not exist yet is checked at its
    nearest existing parent."""
    path = Path(path).expanduser()
    what = f"{flag} {str(path)!r}"
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise CapreseError(f"{what} is not writable: {str(existing)!r} is a file, not a folder")
    _probe_write(existing, what)
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Like `check_output_dir` for a single output file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CapreseError(f"{flag} {str(path)!r} is a folder; give a file path")
    check_output_dir(path.parent, flag=f"{flag} {str(path)!r}: its folder")
    return path


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Write a folder of results into a hidden sibling and move it into `out` when the block ends.

    While the block runs, an earlier result in `out` stays exactly as it was; if the block raises
    (or is interrupted) the sibling is removed and `out` is untouched. On success each entry the
    block wrote replaces its namesake in `out` (other files there are left alone), metrics.json
    last: it is removed first, so `out` never shows the old metrics beside new files.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    apply_umask(stage, folder=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    publish_folder(stage, out)


def publish_folder(stage: Path, out: Path, last: str = "metrics.json") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / last).unlink(missing_ok=True)
    names = sorted((p.name for p in stage.iterdir()), key=lambda name: name == last)
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.old-"))
            os.replace(target, old / name)
            os.replace(stage / name, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage / name, target)
    shutil.rmtree(stage, ignore_errors=True)
