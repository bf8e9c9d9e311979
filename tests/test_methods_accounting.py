"""Active FFN parameters per generated token, from a model or from a config alone."""

import pytest

from caprese.methods import active_ffn_parameters, active_ffn_parameters_from_config, layer_active_parameters
from caprese.testing import tiny_config, tiny_model

D, D_FF = 32, 64


@pytest.mark.parametrize(
    "method,expected",
    [
        ("dense", 3 * D * D_FF),
        ("topk", 2 * D * D_FF + D * 32),
        ("griffin", 3 * D * 32),
        ("cats", D * D_FF + 2 * D * 32),
        ("teal", 0.5 * 3 * D * D_FF),
    ],
)
def test_per_layer_formulas_at_half_sparsity(method, expected):
    sparsity = 0.0 if method == "dense" else 0.5
    assert layer_active_parameters(method, sparsity, D, D_FF, gated=True)["active"] == expected


def test_non_gated_ffn_and_reselection():
    assert layer_active_parameters("griffin", 0.5, D, D_FF, gated=False)["active"] == 2 * D * 32
    assert layer_active_parameters("cats", 0.5, D, D_FF, gated=False)["active"] == D * D_FF + D * 32
    assert (
        layer_active_parameters("griffin", 0.5, D, D_FF, gated=True, reselect_every=8)["reselection"]
        == 2 * D * D_FF / 8
    )


def test_model_totals_and_fractions_for_griffin_on_the_first_half():
    model = tiny_model(num_hidden_layers=4)
    report = active_ffn_parameters(model, "griffin", 0.5, "first_half")
    dense_layer = 3 * D * D_FF
    assert report["ffn_params_dense"] == 4 * dense_layer
    assert report["ffn_params_cut"] == 2 * dense_layer / 2  # two layers keep half their neurons
    assert report["model_params"] == sum(p.numel() for p in model.parameters())
    assert report["model_cut_fraction"] == pytest.approx(report["ffn_params_cut"] / report["model_params"])
    assert report["model_active_fraction"] == pytest.approx(1 - report["model_cut_fraction"])


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPTNeoXForCausalLM", "Gemma2ForCausalLM"])
def test_config_alone_gives_the_same_numbers_as_the_model(arch):
    model = tiny_model(arch, num_hidden_layers=4)
    from_model = active_ffn_parameters(model, "cats", 0.7, [1, 3])
    from_config = active_ffn_parameters_from_config(tiny_config(arch, num_hidden_layers=4), "cats", 0.7, [1, 3])
    assert from_config == from_model
