"""Built-in distillation recipes: a built-in model's card supplies the settings a run leaves unset;
explicit values win (CLI flags given, API dicts/configs, experiment parameters); other models get
caprese.config's defaults (the paper's)."""

import json

import pytest

from caprese.cli import build_parser
from caprese.commands.distill import check_arguments
from caprese.config import E2EConfig, LayerwiseConfig
from caprese.errors import CapreseError
from caprese.experiment import PARAMETERS, ExperimentConfig
from caprese.models.builtins_registered import TOY_MATH_FOLDER
from caprese.models.recipes import Recipe, recipe_for, training_configs

RECIPE = json.loads((TOY_MATH_FOLDER / "distillation_recipe.json").read_text())


def distill_args(*flags):
    base = ["distill", "--model", "toy-math", "--method", "griffin", "--rank", "16", "--out", "unused"]
    return build_parser().parse_args([*base, *flags])


def test_toy_math_card_has_a_recipe_and_other_models_do_not():
    recipe = recipe_for("toy-math")
    assert recipe is not None and recipe.layerwise == RECIPE["layerwise"] and recipe.e2e == RECIPE["e2e"]
    assert recipe_for(str(TOY_MATH_FOLDER)) is not None  # the same model named by its folder
    for other in ("smollm2-135m", "Qwen/Qwen2.5-0.5B-Instruct", "unknown", None):
        assert recipe_for(other) is None


def test_recipe_values_are_used_when_not_given():
    layerwise, e2e, line = training_configs("toy-math")
    assert layerwise.init == RECIPE["layerwise"]["init"] == "closed_form"
    assert e2e.lr == RECIPE["e2e"]["lr"] != E2EConfig().lr
    assert e2e.epochs == RECIPE["e2e"]["epochs"] and layerwise.epochs == RECIPE["layerwise"]["epochs"]
    assert line.startswith("toy-math recipe: ") and "e2e-lr=0.003" in line and "\n" not in line
    # values the recipe does not name keep caprese.config's defaults
    assert layerwise.ridge == LayerwiseConfig().ridge and layerwise.validation_fraction == 0.1


def test_explicit_values_win_over_the_recipe():
    layerwise, e2e, line = training_configs("toy-math", {"init": "random"}, {"lr": 1e-4})
    assert (layerwise.init, e2e.lr) == ("random", 1e-4)
    assert e2e.epochs == RECIPE["e2e"]["epochs"]  # the rest still from the recipe
    assert "yours: init, e2e-lr" in line and "e2e-lr=" not in line.split(" (yours")[0]
    # a whole config object is every value explicit: the recipe leaves it alone
    given = E2EConfig(lr=2e-4, epochs=1)
    assert training_configs("toy-math", None, given)[1] is given


def test_a_model_without_a_recipe_gets_the_paper_defaults():
    layerwise, e2e, line = training_configs("Qwen/Qwen2.5-0.5B-Instruct", {"epochs": 2}, None)
    assert line is None
    assert (layerwise.init, layerwise.lr, layerwise.epochs) == ("random", LayerwiseConfig().lr, 2)
    assert (e2e.lr, e2e.epochs, e2e.batch_size) == (E2EConfig().lr, E2EConfig().epochs, E2EConfig().batch_size)


def test_cli_tells_a_given_flag_from_its_default():
    layerwise, e2e = check_arguments(distill_args())
    assert (layerwise.init, e2e.lr) == ("closed_form", 0.003)
    # the paper's value given explicitly still wins over the recipe
    layerwise, e2e = check_arguments(distill_args("--e2e-lr", "1e-4", "--init", "random", "--epochs", "3"))
    assert (layerwise.init, layerwise.epochs, e2e.lr) == ("random", 3, 1e-4)
    assert e2e.epochs == RECIPE["e2e"]["epochs"]
    args = distill_args("--model", "some/hub-model")
    layerwise, e2e = check_arguments(args)
    assert args.recipe_line is None and (layerwise.init, e2e.lr) == ("random", E2EConfig().lr)


def test_experiment_uses_the_recipe_unless_a_parameter_is_set():
    cfg = ExperimentConfig.from_params(dict(method="griffin", stage="e2e", rank=16))
    layerwise, e2e, line = cfg.layerwise, cfg.e2e, cfg.recipe_line
    assert (layerwise.init, e2e.lr, layerwise.rank) == ("closed_form", 0.003, 16) and "e2e_lr=0.003" in line
    assert cfg.to_params()["e2e_lr"] == 0.003  # metrics.json's flat config records the resolved value
    cfg = ExperimentConfig.from_params(dict(method="griffin", stage="e2e", rank=16, e2e_lr=1e-4, init="random"))
    layerwise, e2e = cfg.layerwise, cfg.e2e
    assert (layerwise.init, e2e.lr) == ("random", 1e-4) and "yours: init, e2e_lr" in cfg.recipe_line
    assert e2e.epochs == RECIPE["e2e"]["epochs"]  # the rest still from the recipe
    # None is "not given" (the notebook's defaults); a model without a recipe gets caprese.config's
    cfg = ExperimentConfig.from_params(dict(model="Qwen/Qwen2.5-0.5B-Instruct", lr=None, stage="e2e", rank=16))
    assert cfg.recipe_line is None and (cfg.layerwise.lr, cfg.e2e.lr) == (LayerwiseConfig().lr, E2EConfig().lr)
    every = set(PARAMETERS)
    assert {"validation_fraction", "patience", "e2e_patience"} <= every


def test_api_takes_the_recipe_for_a_loaded_builtin(capsys):
    """distill() finds the recipe by base_model or the loaded model's folder; dict = overrides."""

    class Loaded:
        class config:
            _name_or_path = str(TOY_MATH_FOLDER)

    layerwise, e2e, line = training_configs("unknown", None, {"epochs": 1}, model=Loaded(), style="api")
    assert (layerwise.init, e2e.lr, e2e.epochs) == ("closed_form", 0.003, 1) and "yours: e2e.epochs" in line


def test_a_bad_recipe_or_override_fails_in_one_line(tmp_path):
    bad = tmp_path / "recipe.json"
    bad.write_text(json.dumps({"layerwise": {"lr": -1.0}}))
    with pytest.raises(CapreseError, match="lr -1.0"):
        Recipe.load("x", bad)
    bad.write_text(json.dumps({"e2e": {"learning_rate": 1.0}}))
    with pytest.raises(CapreseError, match="E2EConfig has no field 'learning_rate'"):
        Recipe.load("x", bad)
    with pytest.raises(CapreseError, match="patience 2 needs a validation split"):
        training_configs("toy-math", {"patience": 2, "validation_fraction": 0.0})


@pytest.mark.parametrize("name", ["methods", "rank", "samples", "sparsity", "coverage"])
def test_main_job_specs_meet_the_precision_target_and_take_the_recipe(name):
    """Every point of the main job's specs is evaluated on enough problems for a 95% Wilson
    half-width <= 5 points at any accuracy (the worst case, p = 0.5), and leaves the distillation
    settings to toy-math's recipe."""
    from pathlib import Path

    from caprese.stats.intervals import wilson_half_width
    from caprese.sweep.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "ablations" / f"{name}.yaml")
    for point in spec.points():
        n = point.params["eval_samples"]
        assert wilson_half_width(n // 2, n) <= 0.05, (point.run_id, n)
        assert point.params["model"] == "toy-math"
        assert not {"init", "lr", "epochs", "e2e_lr", "e2e_epochs"} & set(point.params), point.run_id


def test_distill_flags_read_their_defaults_from_the_configs():
    """--samples, --max-new-tokens and --temperature have one home each (no number repeated in the CLI)."""
    from caprese.config import GenerationConfig
    from caprese.experiment import DistillConfig

    args = distill_args()
    assert args.samples == DistillConfig().samples
    assert args.max_new_tokens == GenerationConfig().max_new_tokens
    assert args.temperature == GenerationConfig().temperature
