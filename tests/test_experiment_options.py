"""Experiment parameters of issue 17 (reselect_every, lora_scope) and the sweep specs that use them."""

from pathlib import Path

import pytest

from caprese.errors import CapreseError
from caprese.experiment import ExperimentConfig
from caprese.sweep import check_spec, load_spec

ABLATIONS = Path(__file__).parent.parent / "ablations"


def test_reselect_every_becomes_griffins_option_and_zero_means_never():
    assert ExperimentConfig.from_params({"reselect_every": 4}).method.options() == {"reselect_every": 4}
    assert ExperimentConfig.from_params({"reselect_every": 0}).method.options() == {}


@pytest.mark.parametrize(
    "params,message",
    [
        ({"reselect_every": -1}, "reselect_every -1"),
        ({"reselect_every": 2.5}, "reselect_every 2.5"),
        (
            {"method": "cats", "reselect_every": 4},
            "reselect_every 4 is for a method that reselects (griffin), not 'cats'",
        ),
        (
            {"lora_scope": "everything", "kind": "lora"},
            "lora_scope 'everything' is not allowed (choose from: kept, full)",
        ),
        ({"lora_scope": "full"}, "lora_scope 'full' is for kind 'lora'"),
    ],
)
def test_bad_values_are_one_line(params, message):
    with pytest.raises(CapreseError) as err:
        ExperimentConfig.from_params(params)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name,count,varying",
    [
        ("reselect", 8, {"reselect_every": {0, 64, 16, 4}, "stage": {"none", "layerwise"}}),
        ("spectra", 2, {"method": {"cats", "griffin"}}),
        ("density", 24, {"method": {"cats", "griffin"}, "sparsity": {0.3, 0.5, 0.7, 0.9}, "rank": {0, 8, 32}}),
    ],
)
def test_new_specs_expand_and_check(name, count, varying):
    spec = load_spec(ABLATIONS / f"{name}.yaml")
    points = spec.points()
    assert len(points) == count
    for key, values in varying.items():
        assert {point.params[key] for point in points} == values
    check_spec(spec)


def test_spectra_spec_is_a_matched_pair():
    points = load_spec(ABLATIONS / "spectra.yaml").points()
    shared = ("rank", "sparsity", "samples", "stage", "layers", "epochs", "init")
    assert len({tuple(point.params[key] for key in shared) for point in points}) == 1
