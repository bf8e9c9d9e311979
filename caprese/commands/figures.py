"""`caprese figures`: re-draw every figure and table of the paper from the finished sweep runs."""

from __future__ import annotations

import argparse
import sys

from ..io import check_output_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "figures",
        help="render every figure and table from finished sweep runs (PNG + PDF + CSV)",
        description="Read runs/<sweep>/<run-id>/metrics.json of every sweep and draw the paper's figures "
        "(2, 3, 4/7, 5, 6, 8, the rank and sample-count ablations) and tables (1, 4, 5) into the output folder, "
        "with figures/README.md saying where each came from. A figure whose sweep has not run is reported "
        "in one line and skipped; the others still render.",
    )
    parser.add_argument(
        "--runs", default="runs", metavar="DIR", help="the folder holding the sweep folders (default runs/)"
    )
    parser.add_argument(
        "--out", default="figures", metavar="DIR", help="where figures and tables go (default figures/)"
    )
    parser.add_argument(
        "--diagnostics",
        default=None,
        metavar="DIR",
        help="a caprese diagnose output folder: draw figure 2 from its figure2.csv "
        "(default: the fig2 sweep, else OUT/diagnostics or RUNS/diagnostics if they hold one)",
    )
    parser.add_argument(
        "--latency",
        default=None,
        metavar="PATH.json",
        help="latency benchmark results for table 5 (default OUT/latency.json)",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="KEYS",
        help="comma-separated figure/table keys or groups to draw: 'real' for the real-model panels "
        "(figures/real/), 'paper' for the paper's figures (the default)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..figures import render_all  # matplotlib and pandas: loaded when this verb runs, not for the CLI's parser

    check_output_dir(args.out)
    report = render_all(args.runs, args.out, diagnostics=args.diagnostics, latency=args.latency, only=args.only)
    print(report.summary())
    if report.removed:
        print(f"removed {len(report.removed)} stale file(s) of figures not made this time", file=sys.stderr)
    if not report.figures_made:
        print("caprese figures: no figure could be drawn; run the sweeps named above first", file=sys.stderr)
    return 0 if report.ok else 1
