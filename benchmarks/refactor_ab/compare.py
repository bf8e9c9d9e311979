"""Behaviour unchanged across a refactor: run `ab.yaml` at two commits, then compare the two sweeps.

    git worktree add --detach /tmp/before <commit>; git worktree add --detach /tmp/after <commit>
    # the worktree's own code must be imported: set the venv's editable-install finder aside
    # (site-packages/__editable__.caprese-*.pth) while the two sweeps run, then put it back
    (cd /tmp/before && PYTHONPATH=$PWD python -m caprese.cli sweep benchmarks/refactor_ab/ab.yaml --workers 1)
    (cd /tmp/after && PYTHONPATH=$PWD python -m caprese.cli sweep benchmarks/refactor_ab/ab.yaml --workers 1)
    python benchmarks/refactor_ab/compare.py /tmp/before/runs/ab /tmp/after/runs/ab

Compares every value in each point's metrics.json (timings and folders left out), then
samples.jsonl (every generation) and the adapters byte for byte. Exit status 1 on any difference.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

SKIP = re.compile(r"(^|\.)(seconds|elapsed|wall_s|out_dir|shared_dir|date|host|started|duration)$|_seconds$")


def flat(obj, prefix: str = ""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from flat(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from flat(value, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def main(a: Path, b: Path) -> int:
    points = sorted(p.parent.name for p in a.glob("*/metrics.json"))
    equal = differ = skipped = 0
    for name in points:
        if not (b / name / "metrics.json").exists():
            print(f"missing in {b}: {name}")
            differ += 1
            continue
        va = dict(flat(json.loads((a / name / "metrics.json").read_text())))
        vb = dict(flat(json.loads((b / name / "metrics.json").read_text())))
        for key in sorted(set(va) | set(vb)):
            if SKIP.search(key):
                skipped += 1
            elif key not in va or key not in vb or not same(va[key], vb[key]):
                differ += 1
                print(f"DIFF {name}: {key}: {va.get(key, '<absent>')!r} vs {vb.get(key, '<absent>')!r}")
            else:
                equal += 1
    print(f"{len(points)} points: {equal} values identical, {differ} different ({skipped} timings/folders left out)")
    for pattern in ("*/samples.jsonl", "*/adapter/*.safetensors"):
        files = sorted(p.relative_to(a) for p in a.glob(pattern))
        bad = [f for f in files if not (b / f).exists() or digest(a / f) != digest(b / f)]
        differ += len(bad)
        print(f"{pattern}: {len(files) - len(bad)} of {len(files)} byte-identical", *(f"\n  differs: {f}" for f in bad))
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: compare.py BEFORE_SWEEP_DIR AFTER_SWEEP_DIR")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
