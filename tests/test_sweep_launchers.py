"""Launcher choice, per-point resources and launcher flags: every mistake is one line before any
run starts. Nothing here starts a kernel, Ray or a Slurm job."""

from pathlib import Path

import pytest
import yaml

from caprese.commands import sweep as sweep_command
from caprese.sweep import SweepSpecError, load_spec, run_sweep
from caprese.sweep.launchers import LAUNCHERS, LauncherOptions, get_launcher
from caprese.sweep.spec import Resources

TOY = Path(__file__).parent / "notebooks" / "toy_run.ipynb"


def write_spec(folder: Path, data: dict, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"notebook": str(TOY), **data}, sort_keys=False))
    return path


def test_resources_come_from_the_spec_and_its_full_variant(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            {
                "grid": {"x": [1]},
                "resources": {"cpus": 4, "gpus": 0.5},
                "full": {"grid": {"x": [1, 2]}, "resources": {"gpus": 1}},
            },
        )
    )
    assert spec.resources == Resources(cpus=4, gpus=0.5)
    assert load_spec(spec.path, full=True).resources == Resources(cpus=4, gpus=1)
    assert load_spec(write_spec(tmp_path, {"grid": {"x": [1]}}, "plain.yaml")).resources == Resources(cpus=1, gpus=0)


def test_bad_resources_are_one_line_each(tmp_path):
    path = write_spec(tmp_path, {"grid": {"x": [1]}, "resources": {"cpus": 0, "gpus": -1, "gpu": 1}})
    with pytest.raises(SweepSpecError) as excinfo:
        load_spec(path)
    lines = excinfo.value.lines
    assert any("unknown key resources.'gpu'; did you mean 'gpus'?" in line for line in lines)
    assert any("resources.cpus: must be a positive number, got 0" in line for line in lines)
    assert any("resources.gpus: must be a number >= 0" in line for line in lines)


def test_launchers_are_a_registry_with_did_you_mean():
    assert list(LAUNCHERS) == ["local", "ray", "slurm"]
    assert get_launcher("Ray") is LAUNCHERS["ray"]
    with pytest.raises(SweepSpecError, match="unknown launcher 'slrum'; did you mean 'slurm'"):
        get_launcher("slrum")


def test_a_flag_of_another_launcher_or_a_whole_gpu_problem_fails_before_any_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"grid": {"x": [1]}, "resources": {"gpus": 0.5}})
    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--address", "auto", "--no-progress"])
    assert code == 2 and "--address is an option of --launcher ray, not local" in capsys.readouterr().err
    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--launcher", "slurm", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "resources.gpus 0.5: Slurm allocates whole gpus; use --launcher ray to share one" in err
    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--launcher", "slurm", "--slurm-option", "account"])
    assert code == 2 and "--slurm-option 'account': write KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SweepSpecError, match="--submitit-cluster 'pbs'"):
        LauncherOptions(submitit_cluster="pbs")
    with pytest.raises(SweepSpecError, match="--partition is an option of --launcher slurm, not ray"):
        run_sweep(
            load_spec(path),
            runs_dir=runs,
            launcher="ray",
            launcher_options=LauncherOptions(partition="gpu"),
            progress=False,
        )
    assert not runs.exists()  # nothing ran, nothing was written


def test_dry_run_with_a_cluster_launcher_starts_nothing(tmp_path, capsys):
    path = write_spec(tmp_path, {"grid": {"x": [1, 2]}, "resources": {"cpus": 2, "gpus": 1}})
    code = sweep_command.main(
        [str(path), "--runs-dir", str(tmp_path / "runs"), "--launcher", "slurm", "--partition", "gpu", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "pending    x=1" in out and "2 points, 0 done, 2 to run (dry run" in out
