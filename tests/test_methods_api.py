"""The method registry, apply_method's life cycle, one-line errors and the shared CLI options."""

import argparse
import dataclasses
import hashlib

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.errors import CapreseError
from caprese.methods import METHODS, EfficientFFN, apply_method, resolve_layers
from caprese.methods.cats import CatsConfig
from caprese.methods.cli_options import add_method_arguments, load_calibration_texts, method_from_args
from caprese.methods.griffin import GriffinConfig
from caprese.testing import tiny_model


def weights_hash(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_registry_lists_every_method_and_suggests_near_misses():
    assert set(METHODS.names()) == {"dense", "topk", "griffin", "cats", "teal"}
    with pytest.raises(CapreseError) as err:
        apply_method(tiny_model(), "grifin", sparsity=0.5).__enter__()
    assert "did you mean 'griffin'" in one_line(err)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "half"])
def test_sparsity_outside_zero_one_is_refused(sparsity):
    with pytest.raises(CapreseError) as err:
        apply_method(tiny_model(), "topk", sparsity=sparsity).__enter__()
    assert repr(sparsity) in one_line(err) or str(sparsity) in one_line(err)


@pytest.mark.parametrize("rho", [0, -3, 1.5, True])
def test_reselection_period_below_one_is_refused(rho):
    with pytest.raises(CapreseError) as err:
        apply_method(tiny_model(), "griffin", sparsity=0.5, reselect_every=rho).__enter__()
    assert "reselect_every" in one_line(err) and repr(rho) in one_line(err)


def test_a_method_config_is_checked_wherever_it_is_built():
    """validate() runs in __post_init__: a config built directly or by dataclasses.replace is checked too."""
    with pytest.raises(CapreseError, match="reselect_every"):
        GriffinConfig(reselect_every=0)
    with pytest.raises(CapreseError, match="threshold_source"):
        dataclasses.replace(CatsConfig(), threshold_source="median")


@pytest.mark.parametrize(
    "layers,needle",
    [
        ([2], "layer 2 is out of range"),
        ([-1], "layer -1 is out of range"),
        ([], "empty"),
        ("middle", "'middle'"),
        ("0,x", "'0,x'"),
    ],
)
def test_bad_layer_choices_are_refused(layers, needle):
    with pytest.raises(CapreseError) as err:
        apply_method(tiny_model(), "topk", sparsity=0.5, layers=layers).__enter__()
    assert needle in one_line(err)


def test_layer_choices_resolve():
    assert resolve_layers("all", 6) == [0, 1, 2, 3, 4, 5]
    assert resolve_layers("first_half", 6) == [0, 1, 2]
    assert resolve_layers("first-half", 7) == [0, 1, 2]
    assert resolve_layers("4,1,1", 6) == [1, 4]
    assert resolve_layers([3], 6) == [3]
    with pytest.raises(CapreseError, match="first_half' is empty"):
        resolve_layers("first_half", 1)


@pytest.mark.parametrize("calibration", [[], [""], [torch.tensor([], dtype=torch.long)]])
def test_an_empty_calibration_set_is_refused(calibration):
    class Tok:  # a tokenizer that yields no token for an empty text
        def __call__(self, texts, **kwargs):
            return {
                "input_ids": torch.zeros(len(texts), 0, dtype=torch.long),
                "attention_mask": torch.zeros(len(texts), 0, dtype=torch.long),
            }

    with pytest.raises(CapreseError) as err:
        apply_method(tiny_model(), "teal", sparsity=0.5, calibration=calibration, tokenizer=Tok()).__enter__()
    assert "empty" in one_line(err)


def test_missing_calibration_unknown_options_and_dense_sparsity_are_refused():
    model = tiny_model()
    with pytest.raises(CapreseError, match="needs a calibration set"):
        apply_method(model, "teal", sparsity=0.5).__enter__()
    with pytest.raises(CapreseError, match="did you mean 'reselect_every'"):
        apply_method(model, "griffin", sparsity=0.5, reselect_evry=2).__enter__()
    with pytest.raises(CapreseError, match="threshold_source 'magic'"):
        apply_method(model, "cats", sparsity=0.5, threshold_source="magic").__enter__()
    with pytest.raises(CapreseError, match="takes no sparsity"):
        apply_method(model, "dense", sparsity=0.5).__enter__()
    with pytest.raises(CapreseError, match="needs a sparsity"):
        apply_method(model, "topk").__enter__()


def test_apply_installs_wrappers_at_chosen_layers_and_restores_the_dense_model():
    model = tiny_model(num_hidden_layers=4)
    before = weights_hash(model)
    originals = [b.installed() for b in ffn_blocks(model)]
    params = sum(p.numel() for p in model.parameters())
    with apply_method(model, "griffin", sparsity=0.5, layers="first_half") as session:
        installed = [b.installed() for b in ffn_blocks(model)]
        assert [isinstance(m, EfficientFFN) for m in installed] == [True, True, False, False]
        assert installed[0].base_layer is originals[0]
        assert sum(p.numel() for p in model.parameters()) == params  # no weight copied
        assert session.layers == [0, 1]
        with torch.inference_mode():
            model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert [b.installed() for b in ffn_blocks(model)] == originals
    assert weights_hash(model) == before


def test_the_dense_model_is_restored_after_an_exception():
    model = tiny_model()
    originals = [b.installed() for b in ffn_blocks(model)]
    with pytest.raises(RuntimeError, match="boom"):
        with apply_method(model, "cats", sparsity=0.5):
            raise RuntimeError("boom")
    assert [b.installed() for b in ffn_blocks(model)] == originals
    assert not model._forward_pre_hooks  # the phase tracker is gone too


def test_nested_application_is_refused_and_leaves_the_outer_one_intact():
    model = tiny_model()
    with apply_method(model, "topk", sparsity=0.5, layers=[0]):
        with pytest.raises(CapreseError, match="layer 0 already has a caprese wrapper"):
            with apply_method(model, "cats", sparsity=0.5):
                pass
        assert isinstance(ffn_blocks(model)[0].installed(), EfficientFFN)
        assert not isinstance(ffn_blocks(model)[1].installed(), EfficientFFN)


def test_prompt_less_sequences_decode_without_prefill_and_a_changing_batch_are_refused():
    from caprese.phase import Phase

    model = tiny_model()
    decode_phase = lambda batch: Phase(
        prompt=torch.zeros(batch, 1, dtype=torch.bool), valid=torch.ones(batch, 1, dtype=torch.bool), prefill=False
    )
    with torch.inference_mode(), apply_method(model, "griffin", sparsity=0.5) as session:
        with pytest.raises(CapreseError, match="sequence 1 has no prompt token"):
            with session.teacher_forced([2, 0]):
                model(input_ids=torch.tensor([[5, 6], [7, 8]]))
        session.tracker.current = decode_phase(1)
        with pytest.raises(CapreseError, match="before any prefill"):
            session.wrapper(1).state = None
            session.wrapper(1)(torch.zeros(1, 1, 32))
        model(input_ids=torch.tensor([[5, 6]]))  # a prefill of one sequence
        session.tracker.current = decode_phase(2)
        with pytest.raises(CapreseError, match="batch of 2 after a prefill of 1"):
            session.wrapper(0)(torch.zeros(2, 1, 32))


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    return method_from_args(parser.parse_args(list(argv)))


def test_cli_options_build_what_apply_method_needs():
    spec = parse(
        "--method", "griffin", "--sparsity", "0.7", "--layers", "first_half", "--reselect-every", "4", "--prune"
    )
    assert (spec.name, spec.sparsity, spec.layers) == ("griffin", 0.7, "first_half")
    assert spec.options == {"reselect_every": 4, "prune": True}
    assert parse().name == "dense" and parse().sparsity == 0.0
    assert parse("--method", "cats").sparsity == 0.5
    teal = parse(
        "--method", "teal", "--teal-allocation", "greedy", "--calibration", "toy-language", "--calibration-samples", "3"
    )
    # every field of the chosen method's config, from its flag or its default (what results files record)
    assert teal.options["allocation"] == "greedy" and teal.options["symmetrize"] is True
    assert len(teal.calibration_texts()) == 3
    assert parse("--method", "teal", "--no-teal-symmetrize", "--calibration", "toy-math").options["symmetrize"] is False
    model = tiny_model()
    with spec.apply(model) as session:
        assert session.method == "griffin" and session.layers == [0]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (("--method", "grifin"), "did you mean 'griffin'"),
        (("--method", "topk", "--sparsity", "1"), "sparsity 1.0 is out of range"),
        (("--method", "griffin", "--reselect-every", "0"), "reselect_every 0"),
        (("--method", "cats", "--reselect-every", "4"), "--reselect-every is a griffin option"),
        (
            (
                "--method",
                "teal",
            ),
            "needs --calibration",
        ),
        (("--method", "dense", "--sparsity", "0.5"), "does nothing with --method dense"),
        (("--method", "teal", "--calibration", "/no/such/file.txt"), "'/no/such/file.txt'"),
    ],
)
def test_cli_options_refuse_bad_input_in_one_line(argv, needle):
    with pytest.raises(CapreseError) as err:
        spec = parse(*argv)
        spec.calibration_texts()
    assert needle in one_line(err)


def test_calibration_files(tmp_path):
    (tmp_path / "a.txt").write_text("one text\n\nanother text\n")
    (tmp_path / "b.jsonl").write_text('{"prompt": "Q: 1+1?", "response": " 2"}\n{"text": "plain"}\n')
    (tmp_path / "empty.txt").write_text("\n")
    assert load_calibration_texts(str(tmp_path / "a.txt"), 10) == ["one text", "another text"]
    assert load_calibration_texts(str(tmp_path / "b.jsonl"), 10) == [{"prompt": "Q: 1+1?", "response": " 2"}, "plain"]
    rows = load_calibration_texts("toy-math", 2)
    assert len(rows) == 2 and rows[0]["prompt"].startswith("Question:") and "####" in rows[0]["response"]
    with pytest.raises(CapreseError, match="is empty"):
        load_calibration_texts(str(tmp_path / "empty.txt"), 10)
