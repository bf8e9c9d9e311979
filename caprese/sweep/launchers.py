"""Where a sweep's points run: local worker processes, Ray tasks or Slurm jobs (a registry).

    caprese sweep ablations/rank.yaml                                  # local (default), --workers 2
    caprese sweep ablations/rank.yaml --launcher ray [--address auto]  # pip install 'caprese[ray]'
    caprese sweep ablations/rank.yaml --launcher slurm --partition gpu # pip install 'caprese[slurm]'

Every launcher runs the same spec into the same `runs/<sweep>/<run-id>/` folders, through the
same `runner.run_point` on the machine that executes the point: one worker process per point
with its timeout, its run lock and its error.json. The driver (the `caprese sweep` process)
skips done points, prepares each folder just before the point is handed out, streams finished
points to the progress bar and records failures nothing else could record (a node that cannot
see the runs dir, a Ray worker or Slurm job that died).

What a cluster needs: the runs dir, the notebook and the working directory on a filesystem every
node mounts at the same path, with the same Python environment (caprese importable, the Jupyter
kernel registered). Within one sweep the driver hands each point to one worker only; two sweeps
of the same spec started at once stay apart through each run's lock (`flock` on `.lock`), which
holds across nodes only where the filesystem makes it so: NFSv4, or NFSv3 with lockd (not
mounted `nolock`; Linux maps flock to NFS byte-range locks), Lustre mounted with `-o flock`
(not `localflock`), GPFS, CephFS; BeeGFS needs `tuneUseGlobalFileLocks`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path

from submitit.helpers import DelayedSubmission

import caprese

from ..errors import CapreseError
from ..io import read_json, write_json
from ..registry import Registry
from .errors import SweepSpecError
from .layout import DONE, FAILED, RunFolder
from .runner import RunOutcome, _Workers, prepare_run, record_failure, run_point
from .spec import Point, SweepSpec

SUBMITIT_CLUSTERS = ("slurm", "local", "debug")
JOB_FILE = "job.json"  # in a run folder: the Slurm job running it, so a restarted driver re-attaches
_SLURM_LIVE = (
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
)


@dataclass
class LauncherOptions:
    """The launcher-specific flags of `caprese sweep` (each belongs to one launcher)."""

    address: str | None = None
    """ray: the cluster to join (`auto`, `ray://host:10001`, `host:6379`); default: $RAY_ADDRESS, else start a local one."""
    partition: str | None = None
    """slurm: the partition (`--partition` of sbatch)."""
    time_limit_min: float | None = None
    """slurm: each job's time limit in minutes; default: the point timeout plus 5 minutes."""
    slurm_options: dict[str, str] = field(default_factory=dict)
    """slurm: further sbatch options (`account`, `qos`, `constraint`, `mem`, ...)."""
    submitit_cluster: str = "slurm"
    """slurm: submitit's executor; `local` runs the jobs on this machine (tests, laptops)."""
    poll_s: float | None = None
    """slurm: seconds between job-state checks (default 1 locally, 15 on Slurm)."""

    def __post_init__(self) -> None:
        if self.submitit_cluster not in SUBMITIT_CLUSTERS:
            raise SweepSpecError(
                f"--submitit-cluster {self.submitit_cluster!r}: choose from {', '.join(SUBMITIT_CLUSTERS)}"
            )
        for name in ("time_limit_min", "poll_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise SweepSpecError(f"{name} {value!r}: must be a positive number")
        bad = [
            f"{k}={v!r}"
            for k, v in self.slurm_options.items()
            if not isinstance(k, str) or not k or not isinstance(v, str)
        ]
        if bad:
            raise SweepSpecError(
                f"--slurm-option {', '.join(bad)}: write KEY=VALUE, e.g. --slurm-option account=myproj"
            )

    def given(self) -> list[str]:
        """The options set to something other than their default."""
        return [
            f.name
            for f in fields(self)
            if getattr(self, f.name) != LauncherOptions.__dataclass_fields__[f.name].default
            and not (f.name == "slurm_options" and not self.slurm_options)
        ]


@dataclass
class SweepContext:
    """What a launcher needs to run a sweep's points (built by `run_sweep` after every check)."""

    spec: SweepSpec
    sweep_dir: Path  # absolute: remote nodes see the same path
    kernel: str
    timeout: float
    cwd: Path
    inputs: dict[str, dict]  # run id -> inputs.json content
    workers: int | None  # points at once; None: the launcher's default
    options: LauncherOptions


Finished = Callable[[RunOutcome], None]


class Launcher:
    """A strategy for running points: `check` before anything runs, `run` to execute them."""

    name = ""
    extra: str | None = None  # the pip extra that installs it: caprese[<extra>]
    module: str | None = None  # the module it needs
    options: tuple[str, ...] = ()  # the LauncherOptions fields it reads
    description = ""

    def check(self, spec: SweepSpec, options: LauncherOptions) -> list[str]:
        lines = []
        for name in options.given():
            if name not in self.options:
                owner = next((n for n, launcher in LAUNCHERS.items() if name in launcher.options), "another launcher")
                lines.append(f"--{name.replace('_', '-')} is an option of --launcher {owner}, not {self.name}")
        if self.module and importlib.util.find_spec(self.module) is None:
            lines.append(f"--launcher {self.name} needs {self.module}: pip install 'caprese[{self.extra}]'")
        return lines

    def run(self, todo: list[Point], ctx: SweepContext, finished: Finished) -> None:
        raise NotImplementedError

    def run_all(self, batches: list[tuple[list[Point], SweepContext, Finished]]) -> None:
        """The points of several sweeps (`caprese sweep A.yaml B.yaml`): one sweep after another,
        unless the launcher can share its workers across them."""
        for todo, ctx, finished in batches:
            self.run(todo, ctx, finished)


class LocalLauncher(Launcher):
    name = "local"
    description = "worker processes on this machine, --workers at once (default 1)"

    def run(self, todo, ctx, finished):
        self.run_all([(todo, ctx, finished)])

    def run_all(self, batches):
        """One pool for the points of every sweep, in order: a worker freed at the end of one
        sweep takes the next sweep's first point instead of idling."""
        if not batches:
            return
        live = _Workers(batches[0][1].workers or 1)
        pool = ThreadPoolExecutor(max_workers=live.size, thread_name_prefix="sweep")
        try:
            futures = {
                pool.submit(run_point, p, ctx.sweep_dir, ctx.spec, kernel=ctx.kernel, timeout=ctx.timeout, cwd=ctx.cwd,
                            workers=live, inputs=ctx.inputs[p.run_id]): finished
                for todo, ctx, finished in batches for p in todo
            }  # fmt: skip
            for future in as_completed(futures):
                futures[future](future.result())
        except BaseException:
            live.kill_all()  # Ctrl-C: stop the workers, their runs stay unfinished and resume later
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else 'no message'}"[:500]


def _code_root() -> str:
    return str(Path(list(caprese.__path__)[0]).resolve().parent)


def execute_remote(
    point: Point, sweep_dir: Path, spec: SweepSpec, kernel: str, timeout: float, cwd: Path, live: _Workers | None = None
) -> RunOutcome:
    """The body of a Ray task / Slurm job: the point, on whichever node runs it."""
    return run_point(point, sweep_dir, spec, kernel=kernel, timeout=timeout, cwd=cwd, workers=live, remote=True)


class RayLauncher(Launcher):
    name = "ray"
    extra = module = "ray"
    options = ("address",)
    description = "Ray tasks with the spec's resources (fractional GPUs allowed); --address joins a cluster"

    def run(self, todo, ctx, finished):
        import ray  # ray and submitit are optional extras: imported by their launcher only

        started_here = not ray.is_initialized()
        if started_here:
            pythonpath = os.pathsep.join(p for p in (_code_root(), os.environ.get("PYTHONPATH", "")) if p)
            # no --address: RAY_ADDRESS if set (Ray's own convention), else a new local cluster
            address = ctx.options.address or os.environ.get("RAY_ADDRESS") or "local"
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})  # fmt: skip
        resources = ctx.spec.resources
        # a task whose node dies is retried (a preempted spot node); the point itself never raises
        task = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=2)(execute_remote)
        queue, pending = list(todo), {}
        cap = ctx.workers or len(todo)  # default: Ray queues what the cluster cannot fit yet
        try:
            while queue or pending:
                while queue and len(pending) < cap:
                    point = queue.pop(0)
                    prepare_run(point, ctx.sweep_dir, ctx.inputs[point.run_id])
                    ref = task.options(name=f"{ctx.spec.name}/{point.run_id}").remote(
                        point, ctx.sweep_dir, ctx.spec, ctx.kernel, ctx.timeout, ctx.cwd
                    )
                    pending[ref] = (point, time.time())
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    point, since = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as err:  # the worker process or its node died
                        outcome = RunOutcome(point, FAILED, time.time() - since, _one_line(err))
                    record_failure(outcome, ctx.sweep_dir, since)
                    finished(outcome)
        except BaseException:
            for ref in pending:  # Ctrl-C: the tasks' workers die, and their point workers with them
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()


class SlurmPoint:
    """A Slurm job running one point; requeued (from the start of the point) when preempted.

    submitit calls `checkpoint` on preemption or time-out: the point's worker is stopped first so
    its lock is free, then the same call is resubmitted."""

    def __init__(self, point: Point, sweep_dir: Path, spec: SweepSpec, kernel: str, timeout: float, cwd: Path):
        self.args = (point, sweep_dir, spec, kernel, timeout, cwd)
        self._live: _Workers | None = None

    def __call__(self) -> RunOutcome:
        self._live = _Workers(1)
        return execute_remote(*self.args, live=self._live)

    def checkpoint(self):
        if self._live is not None:
            self._live.kill_all()
        return DelayedSubmission(SlurmPoint(*self.args))

    def __getstate__(self):
        return {"args": self.args, "_live": None}


class _Attached:
    """A job a previous (killed) driver submitted and that is still alive: wait for it."""

    def __init__(self, record: dict):
        self.record = record

    def alive(self) -> bool:
        job_id, cluster = str(self.record.get("job_id", "")), self.record.get("cluster")
        if cluster == "local":  # the job id is the pid of submitit's local controller
            try:
                cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
            except (OSError, ValueError):
                return False
            return b"submitit" in cmdline
        if cluster == "slurm":
            import submitit

            try:
                state = submitit.SlurmJob(folder=self.record["folder"], job_id=job_id).state
            except Exception:
                return False
            return state.split()[0] in _SLURM_LIVE if state else False
        return False

    def done(self) -> bool:
        return not self.alive()


class SlurmLauncher(Launcher):
    name = "slurm"
    extra = module = "submitit"
    options = ("partition", "time_limit_min", "slurm_options", "submitit_cluster", "poll_s")
    description = "one Slurm job per point through submitit (an array, --workers at once), requeued on preemption"

    def check(self, spec, options):
        lines = super().check(spec, options)
        for key in ("cpus", "gpus"):
            amount = getattr(spec.resources, key)
            if amount != int(amount):
                lines.append(
                    f"{spec.label}: resources.{key} {amount!r}: Slurm allocates whole {key}; use --launcher ray to share one"
                )
        return lines

    def _executor(self, ctx: SweepContext, cap: int | None):
        import submitit

        options, resources = ctx.options, ctx.spec.resources
        folder = ctx.sweep_dir / ".submitit"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.submitit_cluster)
        minutes = options.time_limit_min or math.ceil(ctx.timeout / 60) + 5
        parameters = dict(name=f"caprese-{ctx.spec.name}", timeout_min=int(math.ceil(minutes)), nodes=1, tasks_per_node=1,
                          cpus_per_task=int(resources.cpus), gpus_per_node=int(resources.gpus))  # fmt: skip
        if options.submitit_cluster == "slurm":
            parameters.update(slurm_additional_parameters=dict(options.slurm_options))
            if options.partition:
                parameters["slurm_partition"] = options.partition
            if cap:
                parameters["slurm_array_parallelism"] = cap
        executor.update_parameters(**parameters)
        return executor, folder

    def run(self, todo, ctx, finished):
        cluster = ctx.options.submitit_cluster
        array = cluster == "slurm"  # Slurm throttles the array itself; locally the driver does
        executor, folder = self._executor(ctx, ctx.workers)
        poll = ctx.options.poll_s or (15.0 if array else 1.0)
        jobs: dict[str, tuple[object, Point, float]] = {}  # run id -> (job, point, since)
        queue = []
        for point in todo:
            record_path = RunFolder(ctx.sweep_dir / point.run_id).path / JOB_FILE
            record = read_json(record_path) if record_path.exists() else None
            attached = _Attached(record) if record else None
            if attached is not None and attached.alive():
                jobs[point.run_id] = (attached, point, time.time())
            else:
                queue.append(point)

        def submit(points: list[Point]) -> None:
            for point in points:
                prepare_run(point, ctx.sweep_dir, ctx.inputs[point.run_id])
            calls = [SlurmPoint(p, ctx.sweep_dir, ctx.spec, ctx.kernel, ctx.timeout, ctx.cwd) for p in points]
            if array and len(calls) > 1:
                with executor.batch():
                    submitted = [executor.submit(call) for call in calls]
            else:
                submitted = [executor.submit(call) for call in calls]
            for point, job in zip(points, submitted):
                write_json(
                    RunFolder(ctx.sweep_dir / point.run_id).path / JOB_FILE,
                    {"launcher": "slurm", "cluster": cluster, "job_id": str(job.job_id), "folder": str(folder / "%j")},
                )
                jobs[point.run_id] = (job, point, time.time())

        cap = None if array else (ctx.workers or len(todo))
        try:
            if array and queue:
                submit(queue)
                queue = []
            while queue or jobs:
                if cap is not None and queue and len(jobs) < cap:
                    take, queue = queue[: cap - len(jobs)], queue[cap - len(jobs) :]
                    submit(take)
                for run_id, (job, point, since) in list(jobs.items()):
                    if not job.done():
                        continue
                    del jobs[run_id]
                    if isinstance(job, _Attached):
                        run = RunFolder(ctx.sweep_dir / run_id)
                        if run.metrics.exists():
                            finished(RunOutcome(point, DONE, time.time() - since))
                        elif array:  # it ended without finishing the point (killed, failed): run it again
                            submit([point])
                        else:
                            queue.append(point)
                        continue
                    try:
                        outcome = job.result()
                    except Exception as err:  # the job died: cancelled, node failure, out of memory
                        outcome = RunOutcome(point, FAILED, time.time() - since, _one_line(err))
                    record_failure(outcome, ctx.sweep_dir, since)
                    finished(outcome)
                if jobs or queue:
                    time.sleep(poll)
        except BaseException:
            for job, _, _ in jobs.values():  # Ctrl-C: cancel what this driver submitted
                if not isinstance(job, _Attached):
                    try:
                        job.cancel(check=False)
                    except Exception:
                        pass
            raise


LAUNCHERS: dict[str, Launcher] = {}
_REGISTRY: Registry[Launcher] = Registry("launcher")
for _launcher in (LocalLauncher(), RayLauncher(), SlurmLauncher()):
    LAUNCHERS[_launcher.name] = _launcher
    _REGISTRY.register(_launcher.name, _launcher)


def get_launcher(name: str) -> Launcher:
    """The launcher called `name`; a one-line error with a did-you-mean otherwise."""
    try:
        return _REGISTRY.get(name)
    except CapreseError as err:
        raise SweepSpecError(f"--launcher: {err}") from None
