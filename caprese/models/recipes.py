"""Distillation recipes of built-in models: the layer-wise (eq 7) and end-to-end (eq 8) settings a
built-in model's card names as the ones that reproduce its figures (`distillation_recipe.json`
beside its checkpoint). `caprese distill`, `caprese.distill.distill` and the experiment notebook
start from the recipe and let every value the user gives win; any other model gets the paper's
settings, `caprese.config`'s defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..config import E2EConfig, LayerwiseConfig
from ..errors import CapreseError

RECIPE_FILE = "distillation_recipe.json"

# the flag/parameter each recipe value is overridden with (for the one line a run prints)
FLAGS = {
    ("layerwise", "init"): "init",
    ("layerwise", "lr"): "lr",
    ("layerwise", "epochs"): "epochs",
    ("layerwise", "batch_size"): "batch-size",
    ("e2e", "lr"): "e2e-lr",
    ("e2e", "epochs"): "e2e-epochs",
    ("e2e", "batch_size"): "e2e-batch-size",
}


@dataclass(frozen=True)
class Recipe:
    """A built-in model's distillation settings: field -> value for each stage's config."""

    model: str
    layerwise: dict[str, Any]
    e2e: dict[str, Any]
    why: str = ""

    @classmethod
    def load(cls, model: str, path: Path) -> Recipe:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise CapreseError(f"distillation recipe {path} of {model!r} is unreadable ({err})") from None
        recipe = cls(model, dict(data.get("layerwise", {})), dict(data.get("e2e", {})), data.get("why", ""))
        recipe.configs()  # unknown fields and bad values fail here, naming the file
        return recipe

    def configs(
        self, layerwise: dict[str, Any] | None = None, e2e: dict[str, Any] | None = None
    ) -> tuple[LayerwiseConfig, E2EConfig]:
        """The recipe's configs with `layerwise` / `e2e` (the values a user gave) on top."""
        return _build(LayerwiseConfig, self.layerwise, layerwise, self.model), _build(
            E2EConfig, self.e2e, e2e, self.model
        )

    def describe(self, given: frozenset | set = frozenset(), style: str = "flag") -> str:
        """One line: the values the recipe sets, the ones the user's own values replaced, how to override."""
        used, yours = [], []
        for stage in ("layerwise", "e2e"):
            for name, value in getattr(self, stage).items():
                label = _label(stage, name, style)
                if (stage, name) in given:
                    yours.append(label)
                else:
                    used.append(f"{label}={value:g}" if isinstance(value, float) else f"{label}={value}")
        line = f"{self.model} recipe: {', '.join(used) or 'nothing'}"
        if yours:
            line += f" (yours: {', '.join(yours)})"
        return line + f"; override any, e.g. {HINTS[style]}; other models get the paper's settings"


# experiment parameters whose name is not the flag's (caprese.experiment.PARAMETERS)
PARAMS = {("layerwise", "batch_size"): "distill_batch_size"}
HINTS = {"flag": "--e2e-lr 1e-4", "param": "e2e_lr=1e-4", "api": "e2e={'lr': 1e-4}"}


def _label(stage: str, name: str, style: str) -> str:
    """How a user names a recipe value: a CLI flag, an experiment parameter, or stage.field (the API)."""
    if style == "api":
        return f"{stage}.{name}"
    if style == "param" and (stage, name) in PARAMS:
        return PARAMS[(stage, name)]
    flag = FLAGS.get((stage, name), name.replace("_", "-") if stage == "layerwise" else f"e2e-{name}")
    return flag if style == "flag" else flag.replace("-", "_")


def _build(config_class, recipe: dict, given: dict | None, model: str):
    known = {f.name for f in fields(config_class)}
    for name in {**recipe, **(given or {})}:
        if name not in known:
            raise CapreseError(
                f"{config_class.__name__} has no field {name!r} ({model} recipe or override; "
                f"allowed: {', '.join(sorted(known))})"
            )
    return replace(config_class(), **{**recipe, **(given or {})})


def recipe_for(model_name: str | None, model=None) -> Recipe | None:
    """The recipe of a built-in model, by its name or (for a loaded model) by the folder it came
    from; None for every other model (the paper's settings apply)."""
    from .builtin import builtin_models

    loaded_from = getattr(getattr(model, "config", None), "_name_or_path", None)
    for name, builtin in builtin_models().items():
        if builtin.recipe is None:
            continue
        folder = Path(builtin.recipe).parent.resolve()
        if model_name == name or any(_same_folder(source, folder) for source in (model_name, loaded_from)):
            return Recipe.load(name, builtin.recipe)
    return None


def _same_folder(source: object, folder: Path) -> bool:
    """`source` (a model name or folder) is the built-in model's own folder."""
    if not isinstance(source, str) or not source:
        return False
    try:
        return Path(source).is_dir() and Path(source).resolve() == folder
    except OSError:
        return False


def training_configs(
    model_name: str | None,
    layerwise: LayerwiseConfig | dict | None = None,
    e2e: E2EConfig | dict | None = None,
    *,
    model=None,
    style: str = "flag",
) -> tuple[LayerwiseConfig, E2EConfig, str | None]:
    """The layer-wise and end-to-end configs a run uses, and the line to print (None: no recipe).

    A config object is taken as it is (every value explicit); a dict holds only the values the
    user gave, laid over the recipe (or over caprese.config's defaults for a model without one);
    None takes the recipe whole."""
    recipe = recipe_for(model_name, model)
    explicit_lw, explicit_e2e = isinstance(layerwise, LayerwiseConfig), isinstance(e2e, E2EConfig)
    if recipe is None or (explicit_lw and explicit_e2e):
        lw = layerwise if explicit_lw else _build(LayerwiseConfig, {}, layerwise, str(model_name))
        ee = e2e if explicit_e2e else _build(E2EConfig, {}, e2e, str(model_name))
        return lw, ee, None
    lw_given = {} if explicit_lw else dict(layerwise or {})
    e2e_given = {} if explicit_e2e else dict(e2e or {})
    lw, ee = recipe.configs(lw_given, e2e_given)
    if explicit_lw:
        lw = layerwise
    if explicit_e2e:
        ee = e2e
    given = {("layerwise", n) for n in (recipe.layerwise if explicit_lw else lw_given)}
    given |= {("e2e", n) for n in (recipe.e2e if explicit_e2e else e2e_given)}
    return lw, ee, recipe.describe(given & _recipe_keys(recipe), style)


def _recipe_keys(recipe: Recipe) -> set[tuple[str, str]]:
    return {("layerwise", n) for n in recipe.layerwise} | {("e2e", n) for n in recipe.e2e}
