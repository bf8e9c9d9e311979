"""Reconstruction error: the meter, the rank-r study, oracle top-k from traces, and the same
measurement fed by an efficient-FFN method's teacher mode."""

import math

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.diagnostics import ErrorMeter, OracleTopKProbe, ResidualStudy, oracle_labels, split_of, teacher_callback
from caprese.errors import CapreseError
from caprese.methods import apply_method
from caprese.methods.forcing import teacher_forced_batch
from caprese.phase import PhaseTracker
from caprese.stats import keep_count
from caprese.testing import count_hooks, tiny_model
from caprese.trace import Trace


def test_error_meter_matches_direct_computation_and_merges():
    g = torch.Generator().manual_seed(0)
    ref, app = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    whole, a, b = ErrorMeter(), ErrorMeter(), ErrorMeter()
    whole.update(ref, app)
    a.update(ref[:20], app[:20])
    b.update(ref[20:], app[20:])
    got = a.merge(b).result()
    assert got["tokens"] == 50
    assert math.isclose(got["relative_l2"], ((ref - app).norm() / ref.norm()).item(), rel_tol=1e-6)
    assert math.isclose(got["cosine"], torch.cosine_similarity(ref, app, dim=-1).mean().item(), rel_tol=1e-6)
    per_token = ((ref - app).norm(dim=-1) / ref.norm(dim=-1)).mean().item()
    assert math.isclose(got["relative_l2_token_mean"], per_token, rel_tol=1e-6)
    assert whole.result() == pytest.approx(got)
    assert math.isnan(ErrorMeter().result()["relative_l2"])


def test_study_recovers_a_low_rank_residual_on_held_out_tokens():
    d = 16
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(d, 2, generator=g) @ torch.randn(2, d, generator=g)  # rank-2 residual map

    def tokens(n):
        x, ref = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        return x, ref, ref - x @ mix  # FF̂ misses exactly x·mix

    study = ResidualStudy(d, [0], ["approx"], ranks=[1, 2, 4])
    other_tokens = study.measurer()  # e.g. prompt tokens, scored with the same corrections
    with pytest.raises(CapreseError, match="call fit"):
        study.set_split("eval")
    x, ref, approx = tokens(200)
    with pytest.raises(CapreseError, match="fit that one first"):
        other_tokens.observe(0, x, ref, {"approx": approx})
    study.observe(0, x, ref, {"approx": approx})
    study.fit()
    study.set_split("eval")
    x, ref, approx = tokens(100)  # new tokens
    study.observe(0, x, ref, {"approx": approx})
    errors = {row["rank"]: row["relative_l2"] for row in study.rows()}
    assert math.isclose(errors[0], ((x @ mix).norm() / ref.norm()).item(), rel_tol=1e-6)
    assert errors[1] < errors[0]
    assert errors[2] < 1e-4 and errors[4] < 1e-4
    assert all(row["fit_tokens"] == 200 and row["tokens"] == 100 for row in study.rows())
    x, ref, approx = tokens(50)
    other_tokens.observe(0, x, ref, {"approx": approx})
    measured = {row["rank"]: row for row in other_tokens.rows()}
    assert not other_tokens.fits and measured[2]["relative_l2"] < 1e-4 < measured[0]["relative_l2"]
    assert measured[2]["fit_tokens"] == 200 and measured[2]["tokens"] == 50
    with pytest.raises(CapreseError, match="do not match"):
        study.observe(0, x, ref, {"other": approx})


def test_splits_alternate_whole_sequences():
    assert [split_of(i) for i in range(4)] == ["fit", "eval", "fit", "eval"]


def _forced_batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 90, (n,), generator=g).tolist() for n in (5, 7)]
    continuations = [torch.randint(3, 90, (n,), generator=g).tolist() for n in (6, 4)]
    return teacher_forced_batch(prompts, continuations, pad_id=0)


def _oracle_rows(model, densities, batch):
    blocks = ffn_blocks(model)
    study = ResidualStudy(blocks[0].hidden_size, range(len(blocks)), oracle_labels(densities))
    probe = OracleTopKProbe(study, blocks, densities)
    with (
        torch.inference_mode(),
        PhaseTracker(model) as tracker,
        tracker.teacher_forced(batch.prompt_lengths),
        Trace(model, probe.points, callback=probe.callbacks(tracker)),
    ):
        model(**batch.model_inputs())
    return {(r["layer"], r["density"]): r for r in study.rows()}


def test_oracle_topk_error_equals_brute_force_from_stored_activations():
    model = tiny_model(seed=2)
    batch = _forced_batch(model)
    densities = (0.1, 0.5, 1.0)
    rows = _oracle_rows(model, densities, batch)
    with (
        torch.inference_mode(),
        PhaseTracker(model) as tracker,
        tracker.teacher_forced(batch.prompt_lengths),
        Trace(model, ["ffn_in"], retain=True) as trace,
    ):
        model(**batch.model_inputs())
    for block in ffn_blocks(model):
        x = trace[block.index, "ffn_in"][batch.generated]
        full = block.forward(x)
        z = block.intermediate(x)
        for d in densities:
            k = keep_count(d, z.shape[-1])
            order = z.abs().argsort(dim=-1, descending=True)[:, :k]
            pruned = torch.zeros_like(z).scatter(-1, order, z.gather(-1, order))
            want = ((full - block.output(pruned)).norm() / full.norm()).item()
            row = rows[(block.index, d)]
            assert row["tokens"] == int(batch.generated.sum())
            assert math.isclose(row["relative_l2"], want, rel_tol=1e-4, abs_tol=1e-6), (block.index, d)
        assert rows[(block.index, 1.0)]["relative_l2"] < 1e-5 and rows[(block.index, 1.0)]["cosine"] > 0.99999
    assert count_hooks(model) == 0


def test_an_efficient_method_plugs_into_the_same_measurement():
    """The methods' teacher mode hands (x, FF − FF̂, FF̂) to the study: topk at sparsity 1 − d
    must measure what the oracle probe measures at density d."""
    model = tiny_model(seed=3)
    batch = _forced_batch(model, seed=1)
    oracle = _oracle_rows(model, (0.25,), batch)
    study = ResidualStudy(model.config.hidden_size, [0, 1], ["topk-method"])
    with (
        torch.inference_mode(),
        apply_method(model, "topk", sparsity=0.75, teacher_callback=teacher_callback(study, "topk-method")) as session,
    ):
        with session.teacher_forced(batch.prompt_lengths):
            model(**batch.model_inputs())
    for row in study.rows():
        want = oracle[(row["layer"], 0.25)]
        assert row["tokens"] == want["tokens"]
        assert math.isclose(row["relative_l2"], want["relative_l2"], rel_tol=1e-5)
        assert math.isclose(row["cosine"], want["cosine"], rel_tol=1e-5)
