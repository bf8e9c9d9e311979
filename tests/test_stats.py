"""Streamed FFN statistics equal a brute-force recomputation from stored activations, stay the
same size however many tokens they see, and combine exactly through state_dict / merge."""

import math

import pytest
import torch

from caprese.errors import CapreseError
from caprese.phase import PhaseTracker
from caprese.stats import (
    PHASES,
    FFNStatistics,
    MagnitudeHistogram,
    StatsConfig,
    bin_of,
    collect_statistics,
    is_bin_edge,
    keep_count,
    upper_edges,
)
from caprese.testing import count_hooks, tiny_model
from caprese.trace import Trace

EPSILONS = (0.0, 2.0**-9, 2.0**-7, 0.003, 0.01, 0.05)  # on-grid (free) and off-grid (exact pass)
DENSITIES = (0.05, 0.25, 0.5, 0.9)


def _batch(model, seed=0):
    """Left-padded batch: row 0 has 2 pads; prompts end at different positions."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (3, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    lengths = torch.tensor([7, 6, 9])
    return ids, mask, lengths


def _run(model, config, seed=0, store=None):
    ids, mask, lengths = _batch(model, seed)
    stats = FFNStatistics.for_model(model, config=config)
    with (
        torch.inference_mode(),
        PhaseTracker(model) as tracker,
        tracker.teacher_forced(lengths),
        collect_statistics(model, stats, tracker=tracker),
        Trace(model, points=["gate_act", "z"], retain=True) as trace,
    ):
        model(input_ids=ids, attention_mask=mask)
        if store is not None:
            store.update(trace.values())
    return stats, ids, mask, lengths


def _phase_masks(mask, lengths):
    positions = torch.arange(mask.shape[1])[None, :]
    valid = mask.bool()
    prompt = valid & (positions < lengths[:, None])
    return {"prompt": prompt, "generated": valid & ~prompt}


def _bin_width(value):
    i = bin_of(value)
    edges = upper_edges()
    return 0.0 if i == 0 else float(edges[i] - edges[i - 1])


def test_streamed_statistics_equal_brute_force_from_stored_activations():
    model = tiny_model(num_hidden_layers=3, seed=3)
    stored = {}
    stats, ids, mask, lengths = _run(model, StatsConfig(epsilons=EPSILONS, densities=DENSITIES), store=stored)
    masks = _phase_masks(mask, lengths)
    width = model.config.intermediate_size
    for layer in range(3):
        s = stats.layer(layer)
        z, gate = stored[(layer, "z")], stored[(layer, "gate_act")]
        for phase in PHASES:
            zp = z[masks[phase]].double()  # (tokens, D_FF)
            assert s.z.total(phase) == zp.numel() > 0
            # fractions |Z| <= eps: exact
            for eps, got in zip(EPSILONS, s.z.fractions(phase)):
                want = (z[masks[phase]].abs() <= eps).double().mean().item()
                assert abs(got - want) < 1e-6, (layer, phase, eps)
            # quantiles of |Z| and |gate|: within one histogram bin
            for values, hist in ((zp.abs().flatten(), s.z), (gate[masks[phase]].abs().double().flatten(), s.gate)):
                for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
                    exact = torch.quantile(values, q).item()
                    got = hist.quantile(q, phase)
                    assert abs(got - exact) <= max(_bin_width(exact), _bin_width(got)), (layer, phase, q, got, exact)
            # top-k energy: mean per-token fraction of ||Z||^2 kept, to 1e-6
            energy = zp.square()
            for d, got in zip(DENSITIES, s.topk.kept_fractions(phase)):
                k = keep_count(d, width)
                kept = energy.topk(k, dim=-1).values.sum(-1) / energy.sum(-1)
                assert abs(got - kept.mean().item()) < 1e-6, (layer, phase, d)
            # flocking: overlap of each token's top-k with its sequence's GRIFFIN set
            for d, got in zip(DENSITIES, s.flocking.overlaps(phase)):
                k = keep_count(d, width)
                overlaps = []
                for b in range(z.shape[0]):
                    prompt_z = z[b][masks["prompt"][b]].double()
                    scores = (prompt_z / prompt_z.norm(dim=-1, keepdim=True)).square().sum(0).sqrt()
                    selected = set(scores.topk(k).indices.tolist())
                    for t in masks[phase][b].nonzero().flatten().tolist():
                        mine = set(z[b, t].abs().topk(k).indices.tolist())
                        overlaps.append(len(mine & selected) / k)
                assert abs(got - sum(overlaps) / len(overlaps)) < 1e-6, (layer, phase, d)


def test_generate_counts_prefill_as_prompt_and_decode_steps_as_generated():
    model = tiny_model(seed=4)
    model.generation_config.pad_token_id = 0
    ids = torch.randint(3, 90, (2, 6))
    with torch.inference_mode(), collect_statistics(model, config=StatsConfig(densities=(0.25,))) as stats:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, min_new_tokens=5)
    width = model.config.intermediate_size
    layer = stats.layer(1)
    assert layer.z.total("prompt") == 2 * 6 * width
    assert layer.z.total("generated") == 2 * 4 * width  # the 5th new token is never fed back
    assert layer.topk.tokens.tolist() == [12, 8] and layer.flocking.tokens.tolist() == [12, 8]
    assert count_hooks(model) == 0


def test_ten_times_more_tokens_do_not_grow_the_statistics_memory():
    model = tiny_model(seed=5)
    ids, mask, lengths = _batch(model)

    def trace(forwards):
        stats = FFNStatistics.for_model(model, config=StatsConfig(epsilons=EPSILONS, densities=DENSITIES))
        with (
            torch.inference_mode(),
            PhaseTracker(model) as tracker,
            tracker.teacher_forced(lengths),
            collect_statistics(model, stats, tracker=tracker),
        ):
            for _ in range(forwards):
                model(input_ids=ids, attention_mask=mask)
        return stats

    small, large = trace(1), trace(10)
    assert large.layer(0).z.total("generated") == 10 * small.layer(0).z.total("generated") > 0
    assert large.memory_bytes() == small.memory_bytes()
    sizes = lambda s: sum(
        t.numel()
        for layer in s.state_dict()["layers"].values()
        for part in layer.values()
        if isinstance(part, dict)
        for t in part.values()
        if isinstance(t, torch.Tensor)
    )
    assert sizes(large) == sizes(small)


def test_state_dict_round_trip_and_merge_equal_one_pass_over_everything():
    model = tiny_model(seed=6)
    config = StatsConfig(epsilons=EPSILONS, densities=DENSITIES)
    first, *_ = _run(model, config, seed=1)
    second, *_ = _run(model, config, seed=2)
    both = FFNStatistics.for_model(model, config=config)
    with torch.inference_mode(), PhaseTracker(model) as tracker, collect_statistics(model, both, tracker=tracker):
        for seed in (1, 2):
            ids, mask, lengths = _batch(model, seed)
            with tracker.teacher_forced(lengths):
                model(input_ids=ids, attention_mask=mask)
    restored = FFNStatistics.from_state_dict(first.state_dict()).merge(second)
    for layer in both.layers:
        a, b = restored.layer(layer), both.layer(layer)
        assert torch.equal(a.z.counts, b.z.counts) and torch.equal(a.gate.counts, b.gate.counts)
        assert torch.equal(a.z.below_offgrid, b.z.below_offgrid)
        torch.testing.assert_close(a.topk.kept_sum, b.topk.kept_sum, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.flocking.overlap_sum, b.flocking.overlap_sum, rtol=1e-12, atol=1e-12)
    with pytest.raises(CapreseError, match="configurations differ"):
        FFNStatistics.for_model(model, config=StatsConfig(densities=(0.5,))).merge(first)


def test_histogram_bins_edges_and_inputs():
    assert is_bin_edge(0.0) and is_bin_edge(0.25) and is_bin_edge(1.125) and not is_bin_edge(0.01)
    hist = MagnitudeHistogram([0.0, 0.5, 0.1])
    values = torch.tensor([[0.0, -0.0, 0.5, -0.5, 0.5000001, 0.1, -0.1000001, float("inf")]])
    hist.update(values, torch.tensor([1]))
    assert hist.fractions("generated") == [2 / 8, 6 / 8, 3 / 8]  # 0.5000001 is above 0.5 in float32
    assert math.isnan(hist.fractions("prompt")[0])
    assert hist.quantile(1.0, "generated") == math.inf
    bf16 = MagnitudeHistogram([0.5])
    bf16.update(values.bfloat16(), 0)
    assert bf16.fractions("prompt") == [7 / 8]  # 0.5000001 rounds to 0.5 in bfloat16
    for bad in ([-1.0], [float("nan")], [0.1, 0.1]):
        with pytest.raises(CapreseError):
            MagnitudeHistogram(bad)
    with pytest.raises(CapreseError, match="phase 'decode' is unknown"):
        hist.fractions("decode")
    with pytest.raises(CapreseError, match="density 0.0 is out of range"):
        StatsConfig(densities=(0.0,))


def test_cats_threshold_reads_the_gate_histogram():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(64, 256, generator=g)
    hist = MagnitudeHistogram()
    hist.update(values, 0)
    tau = hist.threshold(0.5)
    exact = torch.quantile(values.double().flatten(), 0.5).item()
    assert abs(tau - exact) <= _bin_width(exact)


def test_standalone_statistics_equal_the_ones_fed_by_the_trace():
    from caprese.phase import Phase
    from caprese.stats import FlockingOverlap, TopKEnergy, phase_ids

    model = tiny_model(seed=7)
    stored = {}
    stats, ids, mask, lengths = _run(model, StatsConfig(epsilons=EPSILONS, densities=(0.25, 1.0)), store=stored)
    masks = _phase_masks(mask, lengths)
    phase = phase_ids(Phase(prompt=masks["prompt"] | ~mask.bool(), valid=mask.bool(), prefill=True))
    z = stored[(1, "z")]
    topk, flocking = TopKEnergy((0.25, 1.0), z.shape[-1]), FlockingOverlap((0.25, 1.0), z.shape[-1])
    topk.update(z, phase)
    flocking.update(z, phase, prefill=True)
    torch.testing.assert_close(topk.kept_sum, stats.layer(1).topk.kept_sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flocking.overlap_sum, stats.layer(1).flocking.overlap_sum, rtol=1e-12, atol=1e-12)
    assert topk.kept_fractions("generated")[1] == pytest.approx(1.0)  # density 1 keeps everything
    assert flocking.overlaps("prompt")[1] == pytest.approx(1.0)


def test_collecting_every_statistic_leaves_logits_bitwise_equal():
    model = tiny_model(num_hidden_layers=3, seed=8)
    ids, mask, lengths = _batch(model)
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with (
            PhaseTracker(model) as tracker,
            tracker.teacher_forced(lengths),
            collect_statistics(model, config=StatsConfig(epsilons=EPSILONS), tracker=tracker),
        ):
            traced = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(plain, traced)
    assert count_hooks(model) == 0
