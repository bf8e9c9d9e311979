"""`caprese sweep ablations/X.yaml`: run a parameterized notebook over a grid, resumably."""

from __future__ import annotations

import argparse
import sys

from ..errors import CapreseError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="run a notebook over a grid of parameters (resumable, parallel)",
        description="Expand a YAML sweep spec into points and execute its notebook once per point "
        "with papermill, into runs/<sweep>/<run-id>/. Points whose metrics.json exists are skipped, "
        "so running the same command again resumes. Everything is checked before the first run.",
    )
    parser.add_argument(
        "spec",
        nargs="+",
        help="the sweep spec, e.g. ablations/rank.yaml; several run as one job (all checked first, one pool of --workers)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="points run at once (local: default 1; ray: default what the cluster fits; slurm: the array's concurrency cap, default none)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check the spec and list the points with their status; run nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="run only points with KEY=VAL (repeatable; a key given twice allows either value)",
    )
    parser.add_argument(
        "--full", action="store_true", help="use the spec's full: grid (the paper-sized sweep, into runs/<name>-full/)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds per run before it is killed and recorded as failed (default: the spec's timeout:, else 3600)",
    )
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="where sweep folders go (default runs/)")
    parser.add_argument(
        "--kernel", default=None, metavar="NAME", help="Jupyter kernel to run the notebook with (default caprese)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group(
        "on a cluster",
        "the same spec and runs/<sweep>/<run-id>/ layout on Ray or Slurm; the runs dir must be on a filesystem every node mounts (README: On a cluster)",
    )
    cluster.add_argument(
        "--launcher",
        default="local",
        metavar="NAME",
        help="local (default: worker processes here), ray (pip install 'caprese[ray]'), slurm (pip install 'caprese[slurm]')",
    )
    cluster.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="ray: the cluster to join (auto, ray://HOST:10001, HOST:6379); default: start a local one",
    )
    cluster.add_argument("--partition", default=None, metavar="NAME", help="slurm: the partition")
    cluster.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MIN",
        help="slurm: minutes per job (default: the point timeout + 5)",
    )
    cluster.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="slurm: another sbatch option, e.g. account=proj, qos=high, mem=64G (repeatable)",
    )
    cluster.add_argument(
        "--submitit-cluster",
        default="slurm",
        metavar="NAME",
        help="slurm: submitit's executor, slurm (default) or local (jobs on this machine)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # papermill and the launchers: loaded when this verb runs, not for the CLI's parser
    from ..sweep import DEFAULT_KERNEL, SweepSpecError, load_spec, run_sweeps
    from ..sweep.launchers import LauncherOptions

    try:
        slurm_options = {}
        for item in args.slurm_option:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SweepSpecError(f"--slurm-option {item!r}: write KEY=VALUE, e.g. --slurm-option account=myproj")
            slurm_options[key.strip()] = value.strip()
        options = LauncherOptions(
            address=args.address,
            partition=args.partition,
            time_limit_min=args.time_limit,
            slurm_options=slurm_options,
            submitit_cluster=args.submitit_cluster,
        )
        if args.only and len(args.spec) > 1:
            raise SweepSpecError(f"--only selects points of one spec; {len(args.spec)} specs were given")
        lines, specs = [], []
        for path in args.spec:
            try:
                specs.append(load_spec(path, full=args.full))
            except SweepSpecError as err:
                lines += err.lines
        if lines:
            raise SweepSpecError(lines)
        reports = run_sweeps(
            specs,
            workers=args.workers,
            only=args.only,
            runs_dir=args.runs_dir,
            kernel=args.kernel or DEFAULT_KERNEL,
            timeout=args.timeout,
            dry_run=args.dry_run,
            progress=not args.no_progress,
            launcher=args.launcher,
            launcher_options=options,
        )
    except KeyboardInterrupt:
        print(
            "caprese sweep: interrupted; unfinished runs were stopped and resume when you run the same command again",
            file=sys.stderr,
        )
        return 130
    except SweepSpecError as err:
        # one line per problem, every one of them, so a spec is fixed in one go
        for line in err.lines:
            print(f"caprese sweep: error: {line}", file=sys.stderr)
        return 2
    for report in reports:
        print(report.summary())
    return 0 if all(report.ok or report.dry_run for report in reports) else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m caprese.commands.sweep ...` (the same as `caprese sweep ...`)."""
    parser = argparse.ArgumentParser(prog="caprese")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except CapreseError as err:
        print(f"caprese sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
