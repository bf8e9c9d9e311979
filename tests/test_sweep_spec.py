"""Sweep specs: expansion, run ids, --only, and every check that must fail before a run starts.
Nothing here starts a kernel."""

from pathlib import Path

import pytest
import yaml

from caprese.commands import sweep as sweep_command
from caprese.notebook_params import kinds_from_annotation
from caprese.sweep import SweepSpecError, load_spec, notebook_parameters, run_id, run_sweep, select
from caprese.sweep.params import check_spec

NOTEBOOKS = Path(__file__).parent / "notebooks"
TOY = NOTEBOOKS / "toy_run.ipynb"
ABLATIONS = Path(__file__).parent.parent / "ablations"


def write_spec(folder: Path, data: dict, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"notebook": str(TOY), **data}, sort_keys=False))
    return path


def errors_of(excinfo) -> list[str]:
    return excinfo.value.lines


# ------------------------------------------------------------------------------ expansion


def test_grid_is_a_cartesian_product_over_base_values(tmp_path):
    spec = load_spec(
        write_spec(tmp_path, {"base": {"x": 5, "label": "b"}, "grid": {"x": [1, 2], "scale": [0.5, 1.0, 2.0]}})
    )
    points = spec.points()
    assert len(points) == 6
    assert [p.run_id for p in points[:3]] == ["x=1_scale=0.5", "x=1_scale=1.0", "x=1_scale=2.0"]
    assert points[-1].params == {"x": 2, "label": "b", "scale": 2.0}  # grid overrides base
    assert points[0].varying == {"x": 1, "scale": 0.5}
    assert spec.name == "demo" and spec.notebook == TOY


def test_zip_lists_vary_together_and_groups_multiply(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            {
                "grid": {"x": [1, 2]},
                "zip": [{"label": ["a", "b", "c"], "scale": [1.0, 2.0, 3.0]}, {"flag": [True, False]}],
            },
        )
    )
    points = spec.points()
    assert len(points) == 2 * 3 * 2
    pairs = {(p.params["label"], p.params["scale"]) for p in points}
    assert pairs == {("a", 1.0), ("b", 2.0), ("c", 3.0)}
    assert points[0].run_id == "x=1_label=a_scale=1.0_flag=true"


def test_run_ids_are_readable_stable_and_unique():
    assert run_id({"rank": 64, "sparsity": 0.5}) == "rank=64_sparsity=0.5"
    assert run_id({"layers": [0, 1], "note": None}) == "layers=0+1_note=none"
    assert run_id({}) == "default"
    # characters a file name should not hold are replaced, and a hash keeps "a/b" apart from "a-b"
    slash, dash = run_id({"model": "org/name"}), run_id({"model": "org-name"})
    assert slash.startswith("model=org-name-") and dash == "model=org-name" and slash != dash
    long_a = run_id({"label": "x" * 200, "seed": 0})
    long_b = run_id({"label": "x" * 200, "seed": 1})
    assert len(long_a) <= 80 and long_a != long_b
    assert run_id({"label": "x" * 200, "seed": 0}) == long_a  # the same point, the same id


def test_full_variant_merges_base_replaces_grid_and_gets_its_own_folder(tmp_path):
    path = write_spec(
        tmp_path,
        {
            "base": {"label": "a", "x": 1},
            "grid": {"scale": [1.0]},
            "full": {"base": {"label": "z"}, "grid": {"scale": [1.0, 2.0, 3.0]}, "timeout": 99},
        },
    )
    small, full = load_spec(path), load_spec(path, full=True)
    assert len(small.points()) == 1 and len(full.points()) == 3
    assert full.name == "demo-full" and full.timeout == 99.0
    assert full.points()[0].params == {"label": "z", "x": 1, "scale": 1.0}
    no_full = write_spec(tmp_path, {"grid": {"x": [1]}}, name="plain.yaml")
    with pytest.raises(SweepSpecError, match="full: section"):
        load_spec(no_full, full=True)


def test_only_filters_points_and_rejects_what_matches_nothing(tmp_path):
    points = load_spec(write_spec(tmp_path, {"grid": {"x": [1, 2, 3], "scale": [0.5, 1.0]}})).points()
    assert [p.run_id for p in select(points, ["x=2"])] == ["x=2_scale=0.5", "x=2_scale=1.0"]
    assert len(select(points, ["x=1", "x=3", "scale=0.50"])) == 2  # a repeated key allows either value
    with pytest.raises(SweepSpecError, match="no point sets 'scal'; did you mean 'scale'"):
        select(points, ["scal=1"])
    with pytest.raises(SweepSpecError, match=r"no point matches \(x takes 1, 2, 3\)"):
        select(points, ["x=7"])
    with pytest.raises(SweepSpecError, match="KEY=VALUE"):
        select(points, ["x"])


# ------------------------------------------------------------------------------ structural errors


def test_structural_spec_errors_are_all_reported_one_line_each(tmp_path):
    path = write_spec(
        tmp_path,
        {
            "grdi": {"x": [1]},
            "base": {"out_dir": "/tmp/x"},
            "grid": {"x": 3, "scale": [1.0]},
            "zip": {"label": ["a", "b"], "tags": [["t"]], "scale": [1.0, 2.0]},
            "timeout": -1,
        },
    )
    with pytest.raises(SweepSpecError) as excinfo:
        load_spec(path)
    lines = errors_of(excinfo)
    assert all("\n" not in line and str(path) in line for line in lines)
    text = "\n".join(lines)
    assert "unknown key 'grdi'; did you mean 'grid'?" in text
    assert "grid.x must be a non-empty list of values, got 3 (write [3] for one value)" in text
    assert "zipped lists must have the same length (label: 2, tags: 1, scale: 2)" in text
    assert "timeout: must be a positive number of seconds, got -1" in text
    assert "'out_dir' is set by the runner" in text
    assert len(lines) == 5


def test_a_parameter_swept_twice_and_a_repeated_value_are_rejected(tmp_path):
    with pytest.raises(SweepSpecError, match="'x' is swept twice"):
        load_spec(write_spec(tmp_path, {"grid": {"x": [1, 2]}, "zip": {"x": [3, 4], "label": ["a", "b"]}}))
    with pytest.raises(SweepSpecError, match="2 points get run id 'x=1'"):
        load_spec(write_spec(tmp_path, {"grid": {"x": [1, 1]}})).points()


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("notebook: a.ipynb\ngrid:\n  x: [1, 2\n")
    with pytest.raises(SweepSpecError, match=r"bad.yaml: invalid YAML at line \d"):
        load_spec(path)


# ------------------------------------------------------------------------------ against the notebook


def test_notebook_parameters_and_their_types():
    params = notebook_parameters(TOY)
    assert list(params)[:3] == ["x", "scale", "label"]
    assert params["x"].kinds == {"int"} and params["scale"].kinds == {"float"}
    assert params["tags"].kinds == {"list"} and params["flag"].kinds == {"bool"}
    assert params["note"].kinds is None  # `note = None`: unknown, anything goes
    assert params["ratio"].kinds == {"float", "None"}  # Optional[float]
    # papermill's parser misses `budget: int | None = None`; the ast reading finds it
    assert params["budget"].kinds == {"int", "None"}
    assert kinds_from_annotation("Union[int, str]") == {"int", "str"}
    assert kinds_from_annotation("list[int] | None") == {"list", "None"}
    assert kinds_from_annotation("SomeClass") is None


def test_values_of_the_right_type_pass(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            {
                "base": {"scale": 2, "note": {"any": "thing"}, "ratio": None, "budget": 3, "tags": []},
                "grid": {"x": [1, 2], "ratio": [0.5, 1], "flag": [True, False]},
            },
        )
    )
    assert "x" in check_spec(spec)  # int where float is expected is fine; None where Optional


def test_unknown_keys_and_wrong_types_fail_with_one_line_each(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            {
                "base": {"lable": "a", "scale": "1e-3"},
                "grid": {"x": [1, 2.5, True], "budget": ["lots"]},
                "zip": {"flag": ["yes", False], "tags": ["t", ["t"]]},
            },
        )
    )
    with pytest.raises(SweepSpecError) as excinfo:
        check_spec(spec)
    lines = errors_of(excinfo)
    nb = str(TOY)
    assert all("\n" not in line and nb in line for line in lines)
    text = "\n".join(lines)
    assert f"base.lable: 'lable' is not a parameter of {nb}; did you mean 'label'?" in text
    assert "base.scale: value '1e-3' is a str, but 'scale'" in text and "write it with a dot" in text
    assert "grid.x: value 2.5 is a float, but 'x'" in text and "takes int (default 1)" in text
    assert "grid.x: value True is a bool" in text  # a bool is not an int, even in Python
    assert "grid.budget: value 'lots' is a str" in text and "takes int or None (annotated int | None)" in text
    assert "zip.flag: value 'yes' is a str" in text
    assert "zip.tags: value 't' is a str, but 'tags'" in text
    assert len(lines) == 7


def test_yaml_values_that_are_not_plain_data_are_rejected(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"grid": {"note": ["2024-01-01"]}}))
    spec.grid["note"] = [yaml.safe_load("2024-01-01")]  # YAML reads an unquoted date as a date
    with pytest.raises(SweepSpecError, match="value datetime.date.* is a date"):
        check_spec(spec)


def test_notebook_without_parameters_cell_or_out_dir_is_rejected(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"notebook": str(NOTEBOOKS / "no_parameters.ipynb"), "grid": {"x": [1]}}))
    with pytest.raises(SweepSpecError, match="has no cell tagged 'parameters'") as excinfo:
        check_spec(spec)
    assert len(errors_of(excinfo)) == 1 and "no_parameters.ipynb" in str(excinfo.value)

    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1\n")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "no_out_dir.ipynb")
    spec = load_spec(write_spec(tmp_path, {"notebook": "no_out_dir.ipynb", "grid": {"x": [1]}}))
    with pytest.raises(SweepSpecError, match="has no parameter 'out_dir'"):
        check_spec(spec)

    spec = load_spec(write_spec(tmp_path, {"notebook": "missing.ipynb", "grid": {"x": [1]}}))
    with pytest.raises(SweepSpecError, match="missing.ipynb' does not exist"):
        check_spec(spec)


def test_a_bad_spec_fails_before_any_run_starts(tmp_path, capsys):
    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"grid": {"x": [1, 2], "sparsity": [0.5]}, "base": {"label": 3}})
    with pytest.raises(SweepSpecError):
        run_sweep(load_spec(path), runs_dir=runs, progress=False)
    assert not runs.exists()  # nothing was created, let alone executed

    code = sweep_command.main([str(path), "--runs-dir", str(runs), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not runs.exists()
    assert len(err) == 2 and all(line.startswith("caprese sweep: error: ") for line in err)
    assert "'sparsity' is not a parameter" in err[0] + err[1] and "base.label: value 3 is an int" in err[0] + err[1]


def test_an_uninstalled_kernel_is_named_before_any_run(tmp_path):
    path = write_spec(tmp_path, {"grid": {"x": [1]}})
    with pytest.raises(SweepSpecError, match="kernel 'no-such-kernel' is not installed; register it with"):
        run_sweep(load_spec(path), runs_dir=tmp_path / "runs", kernel="no-such-kernel", progress=False)
    assert not (tmp_path / "runs").exists()


def test_an_old_run_with_other_parameters_is_refused(tmp_path):
    from caprese.io import write_json

    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"base": {"scale": 2.0}, "grid": {"x": [1]}})
    write_json(runs / "demo" / "x=1" / "params.json", {"scale": 3.0, "x": 1})
    with pytest.raises(SweepSpecError, match=r"x=1 was made with other parameters \(scale: 3.0 -> 2.0\)"):
        run_sweep(load_spec(path), runs_dir=runs, progress=False)


def test_dry_run_lists_points_and_runs_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    path = write_spec(tmp_path, {"grid": {"x": [1, 2]}})
    assert sweep_command.main([str(path), "--runs-dir", str(runs), "--dry-run", "--only", "x=2"]) == 0
    out = capsys.readouterr().out
    assert "pending    x=2" in out and "x=1" not in out and "1 points, 0 done, 1 to run" in out
    assert not runs.exists()


# ------------------------------------------------------------------------------ the ablation specs


@pytest.mark.parametrize("name", ["rank", "sparsity", "samples", "fig2"])
def test_ablation_specs_expand_small_by_default_and_larger_with_full(name):
    path = ABLATIONS / f"{name}.yaml"
    small, full = load_spec(path), load_spec(path, full=True)
    assert small.notebook.name == "experiment.ipynb"
    assert 2 <= len(small.points()) <= 12, "the default grids must run in minutes on 2 cores"
    assert len(full.points()) > len(small.points())
    from caprese.experiment import PARAMETERS

    expected = set(PARAMETERS)  # = the experiment notebook's parameters
    for spec in (small, full):
        assert set(spec.points()[0].params) <= expected
    if small.notebook.exists():  # the experiment notebook is written in another issue
        check_spec(small)
        check_spec(full)


def test_an_old_run_made_with_other_model_weights_is_refused(tmp_path):
    from caprese.io import write_json
    from caprese.models.loading import weights_fingerprint
    from caprese.sweep import RunFolder
    from caprese.testing import tiny_model

    folder = tmp_path / "model"
    tiny_model("LlamaForCausalLM", num_hidden_layers=1, seed=0).save_pretrained(folder)
    experiment = Path(__file__).parent.parent / "notebooks" / "experiment.ipynb"
    path = write_spec(tmp_path, {"notebook": str(experiment), "base": {"model": str(folder)}, "grid": {"rank": [4]}})
    runs = tmp_path / "runs"
    spec = load_spec(path)
    run = RunFolder(runs / "demo" / spec.points()[0].run_id)
    write_json(run.params, spec.points()[0].params)
    write_json(run.metrics, {"accuracy": 0.5})
    write_json(run.inputs, {"model_fingerprint": weights_fingerprint(str(folder))})
    run_sweep(spec, runs_dir=runs, dry_run=True, progress=False, echo=lambda line: None)  # same weights: done

    (folder / "README.md").write_text("a model card is prose, not the model")
    run_sweep(spec, runs_dir=runs, dry_run=True, progress=False, echo=lambda line: None)
    tiny_model("LlamaForCausalLM", num_hidden_layers=1, seed=1).save_pretrained(folder)  # retrained
    with pytest.raises(
        SweepSpecError, match=r"rank=4 was made with other weights of model '.*model' \(fingerprint \w+ -> \w+\)"
    ):
        run_sweep(spec, runs_dir=runs, dry_run=True, progress=False, echo=lambda line: None)
