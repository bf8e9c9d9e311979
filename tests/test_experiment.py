"""The experiment notebook's parameters are exactly ExperimentConfig's, and a run writes metrics.json."""

import json
from dataclasses import fields
from pathlib import Path

import papermill
import pytest

from caprese.errors import CapreseError
from caprese.experiment import PARAMETERS, ExperimentConfig, run_experiment
from caprese.testing import save_tiny_model

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "experiment.ipynb"


def test_notebook_parameters_match_the_config():
    params = papermill.inspect_notebook(str(NOTEBOOK))
    defaults = ExperimentConfig.parameter_defaults()  # to_params() of the defaults; recipe parameters None
    assert list(params) == list(PARAMETERS) == list(defaults)
    for name, info in params.items():
        assert info["default"] == repr(defaults[name]), name


def test_flat_parameters_build_the_nested_config_and_back():
    cfg = ExperimentConfig.from_params(
        {"rank": 8, "stage": "e2e", "distill_batch_size": 7, "temperature": 0.5, "seed": 3}
    )
    assert (cfg.distill.rank, cfg.distill.stage, cfg.layerwise.batch_size, cfg.generation.temperature) == (
        8,
        "e2e",
        7,
        0.5,
    )
    assert (
        cfg.layerwise.rank == 8 and cfg.layerwise.seed == cfg.e2e.seed == cfg.generation.seed == 3
    )  # one rank, one seed
    params = cfg.to_params()
    assert ExperimentConfig.from_params(params) == cfg
    assert params == {
        **ExperimentConfig.from_params({}).to_params(),  # toy-math's recipe fills what is not given
        "rank": 8,
        "stage": "e2e",
        "distill_batch_size": 7,
        "temperature": 0.5,
        "seed": 3,
    }
    for flat, path in PARAMETERS.items():  # every flat name sets exactly one field, none is set twice
        part, _, name = path.rpartition(".")
        assert name in {f.name for f in fields(getattr(ExperimentConfig(), part) if part else ExperimentConfig)}, flat
    assert len(set(PARAMETERS.values())) == len(PARAMETERS)


def test_sweep_checks_read_the_parameters_from_the_dataclass():
    from caprese.sweep.params import notebook_parameters

    params = notebook_parameters(NOTEBOOK)  # the notebook's metadata names ExperimentConfig
    assert list(params) == list(PARAMETERS)
    assert (
        params["lr"].kinds == {"float", "None"}  # None: the model's recipe
        and params["rank"].kinds == {"int"}
        and params["method"].kinds == {"str"}
    )
    assert params["lr"].help == "layer-wise learning rate (paper: 1e-3)"  # LayerwiseConfig's: one home
    assert params["max_new_tokens"].default == "160"  # the experiment's own, not GenerationConfig's 256


def test_unknown_parameter_and_bad_values():
    with pytest.raises(CapreseError, match="unknown experiment parameter 'rnak'"):
        ExperimentConfig.from_params({"rnak": 3})
    with pytest.raises(CapreseError, match="needs rank >= 1"):
        ExperimentConfig.from_params(dict(stage="layerwise", rank=0))
    with pytest.raises(CapreseError, match="kind"):
        ExperimentConfig.from_params(dict(kind="adapter"))
    with pytest.raises(CapreseError, match="distill_batch_size 0 must be an integer >= 1"):
        ExperimentConfig.from_params(dict(distill_batch_size=0))


@pytest.mark.slow
def test_a_run_writes_metrics_with_the_documented_keys(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    cfg = ExperimentConfig.from_params(
        dict(
            model=str(folder),
            method="griffin",
            sparsity=0.5,
            rank=4,
            stage="layerwise",
            samples=6,
            eval_samples=5,
            max_new_tokens=8,
            language_samples=3,
            error_samples=3,
            coverage_samples=2,
            coverage_prompts=2,
            epochs=1,
            distill_batch_size=3,
            out_dir=str(tmp_path / "runs" / "r"),
        )
    )
    run_experiment(cfg)
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    for key in ("config", "math", "language", "coverage", "params", "ffn_error", "caprese", "measured_sparsity"):
        assert key in metrics, key
    assert metrics["measured_sparsity"]["overall"] == pytest.approx(0.5)
    assert set(metrics["ffn_error"]["0"]) == {"method", "caprese"}
    assert metrics["coverage"]["pass_at_k"].keys() == {"1", "2"}
    assert (tmp_path / ".shared").is_dir() and (tmp_path / "runs" / "r" / "adapter" / "caprese_adapter.json").exists()


def test_teal_runs_take_a_calibration_set(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    common = dict(
        model=str(folder),
        method="teal",
        sparsity=0.5,
        eval_samples=2,
        max_new_tokens=4,
        language_samples=0,
        error_samples=0,
    )
    with pytest.raises(CapreseError, match="needs a calibration set"):
        run_experiment(ExperimentConfig.from_params(dict(**common, out_dir=str(tmp_path / "runs" / "none"))))
    run_experiment(
        ExperimentConfig.from_params(
            dict(**common, calibration="toy-language", calibration_samples=4, out_dir=str(tmp_path / "runs" / "teal"))
        )
    )
    metrics = json.loads((tmp_path / "runs" / "teal" / "metrics.json").read_text())
    assert metrics["config"]["calibration"] == "toy-language"
    assert metrics["measured_sparsity"]["overall"] == pytest.approx(0.5, abs=0.1)


def test_distillation_questions_can_mix_in_another_source():
    from caprese.data import toy_language
    from caprese.distill.data import mixed_question_rows

    rows = mixed_question_rows("toy-math", 5, "toy-language", 3, seed=1)
    assert len(rows) == 8 and all("level" in r for r in rows[:5])
    assert rows[5:] == toy_language.generate_rows(3, split="distill", seed=1)
    assert not {r["question"] for r in rows[5:]} & {r["question"] for r in toy_language.generate_rows(500, seed=1)}
    assert len(mixed_question_rows("toy-math", 5)) == 5
    with pytest.raises(CapreseError, match="mix_samples 3 needs a mix source"):
        mixed_question_rows("toy-math", 5, "", 3)
    with pytest.raises(CapreseError, match="'toy-lang'"):
        mixed_question_rows("toy-math", 5, "toy-lang", 3)


def test_cached_teacher_responses_are_keyed_by_the_model_weights(tmp_path):
    from caprese.experiment import distillation_data_key
    from caprese.testing import tiny_model

    folder = tmp_path / "model"
    tiny_model("LlamaForCausalLM", num_hidden_layers=1, seed=0).save_pretrained(folder)
    cfg = ExperimentConfig.from_params(dict(model=str(folder), out_dir=str(tmp_path / "runs" / "a")))
    before = distillation_data_key(cfg, "toy-math")
    assert distillation_data_key(cfg, "toy-math") == before
    tiny_model("LlamaForCausalLM", num_hidden_layers=1, seed=1).save_pretrained(folder)  # retrained
    assert distillation_data_key(cfg, "toy-math") != before
