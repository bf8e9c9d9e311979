"""`caprese collect runs/<sweep>`: gather a sweep's runs into one tidy CSV (and parquet)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..errors import CapreseError
from ..io import check_output_file


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "collect",
        help="gather a sweep's runs into one table (CSV, and parquet if pyarrow is installed)",
        description="One row per run of runs/<sweep>/: its parameters, its flattened metrics.json and "
        "its status (done, failed, incomplete, pending), written atomically.",
    )
    parser.add_argument("sweep_dir", help="a sweep folder, e.g. runs/rank")
    parser.add_argument(
        "--out",
        default=None,
        metavar="PATH.csv",
        help="output CSV (default <sweep_dir>/results.csv; the parquet goes next to it)",
    )
    parser.add_argument("--no-parquet", action="store_true", help="write the CSV only")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # the CLI imports every command to build its parser: a verb's own heavy stack (papermill, pandas) loads when it runs
    from ..sweep.collect import collect_rows, write_results

    if not Path(args.sweep_dir).is_dir():
        raise CapreseError(f"sweep folder {args.sweep_dir!r} does not exist (run `caprese sweep` first)")
    out = Path(args.out) if args.out else Path(args.sweep_dir) / "results.csv"
    check_output_file(out)
    rows = collect_rows(args.sweep_dir)
    paths = write_results(rows, out, parquet=False if args.no_parquet else None)
    counts = Counter(row["status"] for row in rows)
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"{len(rows)} runs ({states}) -> {', '.join(map(str, paths))}")
    return 0
