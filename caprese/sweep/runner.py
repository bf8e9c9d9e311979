"""Run a sweep: check everything first, then execute the points that are not done yet.

Each point runs in its own worker process (`caprese.sweep.worker`, which calls papermill) with
a timeout. A launcher (`launchers`: local processes, Ray tasks, Slurm jobs) decides where and
how many at once; on every one of them the point goes through `run_point`, on the machine that
runs it. The state of every run is in its folder (see `layout`), so a sweep that was interrupted
or killed resumes where it stopped when started again, and a failing point is recorded in its
error.json while the other points go on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

import caprese

from ..io import check_output_dir, read_json, write_json
from .errors import SweepSpecError, raise_if_any
from .layout import DONE, FAILED, MANIFEST, RunFolder
from .params import check_spec
from .spec import Point, SweepSpec, select
from .worker import EXIT_BUSY, EXIT_OK

DEFAULT_KERNEL = "caprese"
DEFAULT_TIMEOUT_S = 3600.0
BUSY = "busy"  # another sweep is executing this point right now
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class RunOutcome:
    point: Point
    status: str  # done / failed / busy / interrupted
    seconds: float = 0.0
    error: str = ""


@dataclass
class SweepReport:
    name: str
    sweep_dir: Path
    selected: list[Point]
    already_done: list[Point] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def ok(self) -> bool:
        """Every selected point is done (read from the files: a point another sweep was running
        while this one found it busy counts once that sweep finished it)."""
        return all(RunFolder(self.sweep_dir / p.run_id).is_done() for p in self.selected)

    def summary(self) -> str:
        if self.dry_run:
            return f"sweep {self.name}: {len(self.selected)} points, {len(self.already_done)} done, {len(self.selected) - len(self.already_done)} to run (dry run: nothing executed)"
        parts = [f"{self.count(DONE)} done", f"{self.count(FAILED)} failed"]
        parts += [f"{self.count(s)} {s}" for s in (BUSY, INTERRUPTED) if self.count(s)]
        lines = [
            f"sweep {self.name}: {len(self.selected)} points: {len(self.already_done)} already done, "
            f"{len(self.outcomes)} ran ({', '.join(parts)}); results in {self.sweep_dir}"
        ]
        for outcome in self.outcomes:
            if outcome.status == FAILED:
                log = RunFolder(self.sweep_dir / outcome.point.run_id).log
                lines.append(f"  failed {outcome.point.run_id}: {outcome.error} (log: {log})")
            elif outcome.status == BUSY:
                lines.append(f"  busy   {outcome.point.run_id}: another sweep is running it")
        return "\n".join(lines)


def sweep_dir_for(spec: SweepSpec, runs_dir: str | Path = "runs") -> Path:
    return Path(runs_dir) / spec.name


def _canonical(params: dict) -> dict:
    return json.loads(json.dumps(params, sort_keys=True))


def model_inputs(point: Point, fingerprints: dict[str, str | None]) -> dict:
    """What a run used besides its parameters: the model's weights fingerprint (local models)."""
    model = point.params.get("model")
    if not isinstance(model, str):
        return {}
    if model not in fingerprints:
        from ..models.loading import weights_fingerprint  # torch: the sweep layer imports without it

        fingerprints[model] = weights_fingerprint(model)
    return {"model_fingerprint": fingerprints[model]} if fingerprints[model] else {}


def check_existing_runs(spec: SweepSpec, points: list[Point], sweep_dir: Path) -> dict[str, dict]:
    """A run folder made with other parameters or other model weights would be skipped (or
    overwritten) silently: refuse. Returns each point's inputs (run id -> inputs.json content)."""
    lines, inputs, fingerprints = [], {}, {}
    for point in points:
        run = RunFolder(sweep_dir / point.run_id)
        inputs[point.run_id] = model_inputs(point, fingerprints)
        if not run.params.exists():
            continue
        try:
            stored = read_json(run.params)
        except (OSError, ValueError):
            continue  # unreadable: params.json is rewritten before the run starts
        wanted = _canonical(point.params)
        if stored != wanted:
            changed = ", ".join(
                f"{k}: {stored.get(k, '<unset>')!r} -> {wanted.get(k, '<unset>')!r}"
                for k in sorted(set(stored) | set(wanted))
                if stored.get(k, "<unset>") != wanted.get(k, "<unset>")
            )
            lines.append(
                f"{spec.label}: run {run.path} was made with other parameters ({changed}); "
                "move it away or give the sweep another name"
            )
        elif run.inputs.exists() and inputs[point.run_id] and run.is_done():
            made_with = read_json(run.inputs).get("model_fingerprint")
            if made_with and made_with != inputs[point.run_id]["model_fingerprint"]:
                lines.append(
                    f"{spec.label}: run {run.path} was made with other weights of model {point.params['model']!r} "
                    f"(fingerprint {made_with} -> {inputs[point.run_id]['model_fingerprint']}); "
                    "move it away or give the sweep another name"
                )
    raise_if_any(lines)
    return inputs


def plan(
    spec: SweepSpec, *, only=(), runs_dir: str | Path = "runs", kernel: str | None = DEFAULT_KERNEL
) -> tuple[list[Point], Path, dict[str, dict]]:
    """Everything that can go wrong before a run starts: spec vs notebook, kernel, --only, old runs.
    Returns the points, the sweep's folder and each point's inputs (see `check_existing_runs`)."""
    check_spec(spec, kernel=kernel)
    points = select(spec.points(), list(only))
    sweep_dir = sweep_dir_for(spec, runs_dir)
    inputs = check_existing_runs(spec, points, sweep_dir)
    return points, sweep_dir, inputs


class _Workers:
    """The live worker processes, so an interrupted sweep can stop them all."""

    def __init__(self, size: int = 1):
        self.size = size  # how many run at once
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)
            if self.stopping:  # started by a thread that was already past its check when Ctrl-C came
                _kill_group(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        self.stopping = True
        with self._lock:
            for proc in list(self._procs):
                _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker leads its own session
    except (ProcessLookupError, PermissionError):
        pass


def _worker_env(workers: int = 1) -> dict[str, str]:
    """The worker and its kernel must import this caprese, wherever the sweep was started from.

    Each of `workers` concurrent runs gets an equal share of the CPU threads, and OpenMP threads
    sleep rather than spin at barriers: oversubscribed spinning threads stall each other (the
    variables the user set win)."""
    root = str(Path(list(caprese.__path__)[0]).resolve().parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if workers > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def prepare_run(point: Point, sweep_dir: Path, inputs: dict | None = None) -> RunFolder:
    """Create the point's folder with its params.json and inputs.json (just before it starts)."""
    run = RunFolder(sweep_dir / point.run_id)
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.params, point.params)
    write_json(run.inputs, inputs if inputs is not None else model_inputs(point, {}))
    return run


def not_visible(run: RunFolder, notebook: Path, cwd: Path) -> str | None:
    """On a remote node: the one line saying which shared path this machine cannot see, if any."""
    for what, path, ok in (
        ("run folder", run.path, run.params.is_file()),
        ("notebook", notebook, notebook.is_file()),
        ("working directory", cwd, cwd.is_dir()),
    ):
        if not ok:
            return (
                f"RunsDirNotVisible: node {socket.gethostname()} cannot see the {what} {path}; the runs dir, "
                "the spec's notebook and the sweep's working directory must be on a filesystem every node mounts "
                "at the same path"
            )
    return None


def run_point(
    point: Point,
    sweep_dir: Path,
    spec: SweepSpec,
    *,
    kernel: str,
    timeout: float | None,
    cwd: Path,
    workers: _Workers | None = None,
    inputs: dict | None = None,
    remote: bool = False,
) -> RunOutcome:
    """Execute one point in a worker process and record its outcome in its folder.

    Called on the machine that runs the point. The worker's watchdog follows the process calling
    this (the sweep for local points, the Ray task or Slurm job on another node), never the
    sweep's driver across machines. `remote`: the driver has prepared the folder
    (`prepare_run`); check that this machine sees it instead of writing it."""
    workers = workers or _Workers()
    if workers.stopping:
        return RunOutcome(point, INTERRUPTED, 0.0)
    if remote:
        run = RunFolder(sweep_dir / point.run_id)
        problem = not_visible(run, spec.notebook.resolve(), cwd)
        if problem:
            return RunOutcome(point, FAILED, 0.0, problem)
    else:
        run = prepare_run(point, sweep_dir, inputs)
    cmd = [
        sys.executable, "-m", "caprese.sweep.worker", str(run.path),
        "--notebook", str(spec.notebook.resolve()), "--kernel", kernel,
        "--cwd", str(cwd), "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    started = time.time()
    # its own session: Ctrl-C in the terminal reaches the sweep only, which then stops the workers
    # without recording their runs as failed; a timeout kills the worker's whole process group
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=_worker_env(workers.size),
        text=True,
    )
    workers.add(proc)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        output, _ = proc.communicate()
        time.sleep(1.5)  # the kernel outlives its worker by up to a second (ipykernel polls its parent)
    finally:
        workers.discard(proc)
    seconds = time.time() - started
    if workers.stopping:
        return RunOutcome(point, INTERRUPTED, seconds)
    if proc.returncode == EXIT_BUSY:
        return RunOutcome(point, BUSY, seconds)
    if timed_out or proc.returncode != EXIT_OK:
        if timed_out:
            message = f"TimeoutError: the run took longer than {timeout:g} s and was killed"
        else:
            message = f"worker exited with code {proc.returncode}: {_tail(output) or 'no output'}"
        recorded = run.error.exists() and run.error.stat().st_mtime >= started - 1
        if timed_out or not recorded:  # the worker records the notebook's own errors itself
            run.set_aside_metrics()
            write_json(
                run.error,
                {
                    "error": message,
                    "type": "TimeoutError" if timed_out else "WorkerError",
                    "output": output[-4000:],
                    "duration_s": round(seconds, 3),
                },
            )
            run.promote_partial_notebook()
    if run.is_done():
        return RunOutcome(point, DONE, seconds)
    error = read_json(run.error).get("error", "") if run.error.exists() else "no metrics.json and no error.json"
    return RunOutcome(point, FAILED, seconds, error)


def record_failure(outcome: RunOutcome, sweep_dir: Path, since: float) -> None:
    """On the driver: write error.json for a point that failed where nothing could record it (a
    node that cannot see the runs dir, a Ray worker or Slurm job that died)."""
    run = RunFolder(sweep_dir / outcome.point.run_id)
    if outcome.status != FAILED or (run.error.exists() and run.error.stat().st_mtime >= since - 1):
        return
    run.set_aside_metrics()
    kind = outcome.error.split(":", 1)[0] if ":" in outcome.error else "WorkerError"
    write_json(run.error, {"error": outcome.error, "type": kind, "duration_s": round(outcome.seconds, 3)})


def run_sweep(spec: SweepSpec, **kwargs) -> SweepReport:
    """Check the spec, then run every selected point that is not done; return what happened.
    The keywords are `run_sweeps`'s."""
    return run_sweeps([spec], **kwargs)[0]


def run_sweeps(
    specs: list[SweepSpec],
    *,
    workers: int | None = None,
    only=(),
    runs_dir: str | Path = "runs",
    kernel: str = DEFAULT_KERNEL,
    timeout: float | None = None,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    launcher: str = "local",
    launcher_options=None,
) -> list[SweepReport]:
    """Check every spec, then run every selected point that is not done; one report per spec.

    Nothing runs until all specs pass their checks. `launcher`: where points run
    (`caprese.sweep.launchers.LAUNCHERS`: local, ray, slurm), with its `LauncherOptions`;
    `workers`: how many at once (local: default 1, one pool for the points of all specs, in spec
    order, so no worker idles at the end of one sweep while another has points left; ray: default
    all, Ray runs what the cluster's resources fit and queues the rest; slurm: the array's
    concurrency cap)."""
    from .launchers import LauncherOptions, SweepContext, get_launcher

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepSpecError(f"--workers {workers!r}: must be an integer >= 1")
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
        raise SweepSpecError(f"--timeout {timeout!r}: must be a number of seconds > 0")
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SweepSpecError(f"sweep {', '.join(twice)} given twice: each spec runs once per command")
    strategy = get_launcher(launcher)
    options = launcher_options or LauncherOptions()
    lines, planned = [], []
    for spec in specs:
        lines += strategy.check(spec, options)
        try:
            planned.append(plan(spec, only=only, runs_dir=runs_dir, kernel=kernel))
        except SweepSpecError as err:
            lines += err.lines
    raise_if_any(list(dict.fromkeys(lines)))  # a launcher problem shared by every spec is said once
    reports, batches = [], []
    for spec, (points, sweep_dir, inputs) in zip(specs, planned):
        report = SweepReport(spec.name, sweep_dir, points, dry_run=dry_run)
        reports.append(report)
        todo = []
        for point in points:
            (report.already_done if RunFolder(sweep_dir / point.run_id).is_done() else todo).append(point)
        if dry_run:
            if len(specs) > 1:  # which sweep (and folder) the points below belong to
                echo(f"sweep {spec.name} -> {sweep_dir}")
            for point in points:
                status, reason = RunFolder(sweep_dir / point.run_id).state()
                echo(f"{status:<10} {point.run_id}" + (f"  ({reason}; runs again)" if reason else ""))
            continue
        check_output_dir(sweep_dir, "--runs-dir")  # before any kernel starts
        write_json(sweep_dir / MANIFEST, {
            "name": spec.name,
            "spec": str(spec.path) if spec.path else None,
            "notebook": str(spec.notebook),
            "full": spec.full,
            "points": [{"run_id": p.run_id, "params": p.params} for p in spec.points()],
        })  # fmt: skip
        # absolute paths: a Ray task or Slurm job runs in another working directory, maybe on another node
        shared = replace(spec, notebook=spec.notebook.resolve())
        point_timeout = timeout if timeout is not None else (spec.timeout or DEFAULT_TIMEOUT_S)
        context = SweepContext(shared, sweep_dir.resolve(), kernel, point_timeout, Path.cwd(), inputs, workers, options)
        batches.append((todo, context, report))
    if dry_run:
        return reports
    total = sum(len(todo) for todo, _, _ in batches)
    label = "+".join(names) if len(names) <= 3 else f"{len(names)} sweeps"
    bar = tqdm(total=total, desc=f"sweep {label} ({strategy.name})", unit="run", disable=not progress or not total)

    def finished_into(report: SweepReport):
        def finished(outcome: RunOutcome) -> None:  # on the driver as each point ends, in any order
            report.outcomes.append(outcome)
            bar.update(1)
            bar.set_postfix(failed=sum(r.count(FAILED) for r in reports), refresh=False)

        return finished

    try:
        strategy.run_all([(todo, context, finished_into(report)) for todo, context, report in batches if todo])
    finally:
        bar.close()
    for todo, _, report in batches:
        order = {p.run_id: i for i, p in enumerate(todo)}
        report.outcomes.sort(key=lambda o: order[o.point.run_id])
    return reports
