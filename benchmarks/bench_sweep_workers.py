"""The same small sweep with --workers 1 and --workers 2 (or on Ray): wall time and speed-up.

    .venv/bin/python benchmarks/bench_sweep_workers.py [--points 4] [--sleep 1.0]
    .venv/bin/python benchmarks/bench_sweep_workers.py --ray [--points 8]   # local(1) / ray(2 CPUs)

With --ray: Ray's fixed start-up cost (a local 2-CPU cluster up and its first task back) is
measured on its own, then the same sweep runs as Ray tasks on that cluster, and the ratio
local(1 worker) / ray(2 workers) is printed without and with the start-up.

Each point executes tests/notebooks/toy_run.ipynb (sleeping `--sleep` seconds inside the
notebook) in its own worker process and kernel, so the time per point is mostly process and
kernel start-up: that part is CPU-bound, and a second worker helps as far as a second core is free.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from caprese.sweep import load_spec, run_sweep  # noqa: E402

NOTEBOOK = REPO / "tests" / "notebooks" / "toy_run.ipynb"


def timed_sweep(spec_path: Path, runs_dir: Path, workers: int | None, launcher: str = "local") -> float:
    started = time.perf_counter()
    report = run_sweep(load_spec(spec_path), workers=workers, runs_dir=runs_dir, progress=False, launcher=launcher)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"the benchmark sweep failed:\n{report.summary()}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each notebook sleeps")
    parser.add_argument("--ray", action="store_true", help="compare local (1 worker) with Ray (2 CPUs) instead")
    args = parser.parse_args()
    if args.ray and args.points < 8:
        raise SystemExit("--ray: use --points 8 or more")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = tmp / "bench.yaml"
        spec.write_text(yaml.safe_dump({
            "notebook": str(NOTEBOOK),
            "base": {"sleep_s": args.sleep},
            "grid": {"x": list(range(args.points))},
        }))  # fmt: skip
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{args.points} points, {args.sleep:g} s sleep each, {os.cpu_count()} CPUs, load average {load:.2f}")
        one = timed_sweep(spec, tmp / "runs-1", workers=1)
        print(f"--workers 1: {one:6.1f} s  ({one / args.points:.1f} s per point)")
        if args.ray:
            return ray_comparison(spec, tmp, one, args.points)
        two = timed_sweep(spec, tmp / "runs-2", workers=2)
        print(f"--workers 2: {two:6.1f} s  ({two / args.points:.1f} s per point)")
        print(f"speed-up (workers 1 / workers 2): {one / two:.2f}x")
    return 0


def ray_comparison(spec: Path, tmp: Path, one: float, points: int) -> int:
    import ray

    started = time.perf_counter()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={
            "env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        },
    )
    up = time.perf_counter() - started
    ray.get(ray.remote(lambda: None).remote())
    first = time.perf_counter() - started
    print(
        f"Ray start-up: {up:6.1f} s to a 2-CPU local cluster, {first:6.1f} s to its first task back (paid once per sweep)"
    )
    try:
        two = timed_sweep(spec, tmp / "runs-ray", workers=None, launcher="ray")
    finally:
        ray.shutdown()
    print(f"--launcher ray (2 CPUs): {two:6.1f} s  ({two / points:.1f} s per point)")
    print(
        f"speed-up local(1 worker) / ray(2 workers): {one / two:.2f}x without start-up, {one / (two + first):.2f}x with it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
