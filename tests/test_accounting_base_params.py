"""Parameter counts of the base model must not include what caprese attaches to it."""

from caprese.arch.ffn import base_model_parameters
from caprese.distill.path import LowRankPath
from caprese.distill.report import parameter_share
from caprese.methods import active_ffn_parameters, apply_method
from caprese.testing import tiny_model


def test_attached_correction_is_not_counted_as_model_parameters():
    model = tiny_model()
    plain = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    before = active_ffn_parameters(model, "griffin", 0.5)
    hidden = model.config.hidden_size
    with apply_method(model, "griffin", sparsity=0.5) as session:
        for layer in session.wrappers:
            session.set_correction(layer, LowRankPath(hidden, 4, seed=layer))
        attached = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        assert attached == plain + len(session.wrappers) * 2 * 4 * hidden  # the corrections are there
        assert sum(p.numel() for p in base_model_parameters(model)) == plain  # and not counted
        assert active_ffn_parameters(model, "griffin", 0.5) == before
        assert parameter_share(model, 10)["model_parameters"] == plain
