"""Calibration statistics, the distributions thresholds are read from, and the threshold equations."""

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.methods import (
    EmpiricalDistribution,
    StreamingHistogram,
    apply_method,
    cats_threshold,
    collect_calibration,
    teal_threshold,
)
from caprese.methods.distributions import SymmetrizedEmpirical
from caprese.testing import tiny_model


def test_streaming_histogram_quantiles_match_exact_ones_while_the_range_grows():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(200_000, generator=g) * 0.5 + 0.2
    hist = StreamingHistogram(bins=4096)
    for chunk in (values[:10], values[10:]):  # a tiny first chunk forces several doublings
        hist.update(chunk)
    assert hist.total == values.numel()
    for q in (0.1, 0.5, 0.75, 0.95):
        assert hist.quantile(q) == pytest.approx(torch.quantile(values, q).item(), abs=2e-3)


def test_histograms_merge_and_round_trip_their_state():
    a, b = StreamingHistogram(bins=1024), StreamingHistogram(bins=1024)
    a.update(torch.linspace(-1, 1, 1001))
    b.update(torch.linspace(-7, 7, 1001))
    merged = a.copy().merge(b)
    direct = StreamingHistogram(bins=1024)
    direct.update(torch.linspace(-1, 1, 1001))
    direct.update(torch.linspace(-7, 7, 1001))
    assert torch.equal(merged.counts, direct.counts) and merged.limit == direct.limit
    again = StreamingHistogram.from_state_dict(merged.state_dict())
    assert again.quantile(0.3) == merged.quantile(0.3)


def test_cats_threshold_is_the_sparsity_quantile_of_the_magnitudes():
    values = torch.arange(1, 101, dtype=torch.float32)  # |a| = 1..100
    tau = cats_threshold(EmpiricalDistribution(values), 0.3)
    assert tau == 30.0 and (values <= tau).float().mean() == 0.3
    assert cats_threshold(EmpiricalDistribution(values), 0.0) == float("-inf")


def test_teal_threshold_is_the_inverse_cdf_at_half_plus_half_p():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(100_000, generator=g)  # zero-mean, symmetric: TEAL's assumption holds
    hist = StreamingHistogram()
    hist.update(values)
    for p in (0.4, 0.7):
        t = teal_threshold(hist, p)
        assert t == pytest.approx(torch.quantile(values, 0.5 + p / 2).item(), abs=5e-3)
        assert (values.abs() <= t).float().mean().item() == pytest.approx(p, abs=0.01)
    assert teal_threshold(hist, 0.0) == 0.0


def test_symmetrizing_makes_the_teal_rule_exact_for_skewed_activations():
    g = torch.Generator().manual_seed(2)
    values = torch.randn(100_000, generator=g) + 0.4  # not zero-mean
    hist = StreamingHistogram()
    hist.update(values)
    raw = teal_threshold(hist, 0.5)
    assert abs((values.abs() <= raw).float().mean().item() - 0.5) > 0.03  # TEAL's rule misses here
    for distribution in (hist.symmetrized(), SymmetrizedEmpirical(values)):
        t = teal_threshold(distribution, 0.5)
        assert (values.abs() <= t).float().mean().item() == pytest.approx(0.5, abs=2e-3)


def test_calibration_counts_real_tokens_only_and_stops_after_the_last_layer():
    model = tiny_model(num_hidden_layers=4)
    padded = [torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10, 11, 12, 13])]
    calls = []
    handle = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    stats = collect_calibration(
        model,
        padded,
        needs={"inputs", "gate_abs", "intermediate", "sample"},
        layers=[0, 1],
        batch_size=2,
        progress=False,
    )
    handle.remove()
    assert not calls  # layers 2-3 and the LM head never ran
    assert sorted(stats.layers) == [0, 1]
    for layer in stats.layers.values():
        assert layer.tokens == 9 and layer.inputs.total == 9 * 32 and layer.intermediate.total == 9 * 64
        assert layer.sample.shape == (9, 32)
    # the statistics of the padded batch equal those of each sequence alone
    alone = [collect_calibration(model, [seq], needs={"inputs"}, layers=[1], progress=False) for seq in padded]
    combined = alone[0].layers[1].inputs.merge(alone[1].layers[1].inputs)
    assert combined.total == stats.layers[1].inputs.total
    assert combined.quantile(0.6) == pytest.approx(stats.layers[1].inputs.quantile(0.6), abs=1e-3)


def test_calibration_stats_are_reusable_and_checked():
    model = tiny_model()
    data = [torch.randint(3, 96, (12,)) for _ in range(4)]
    stats = collect_calibration(model, data, needs={"inputs", "sample"}, progress=False)
    for sparsity in (0.3, 0.6):
        with apply_method(model, "teal", sparsity=sparsity, calibration=stats) as session:
            assert session.calibration is stats
    with pytest.raises(Exception, match="lack gate_abs"):
        apply_method(model, "cats", sparsity=0.5, threshold_source="calibration", calibration=stats).__enter__()


def test_calibration_from_texts_uses_the_tokenizer():
    class CharTokenizer:
        def __call__(self, texts, return_tensors=None, padding=None, truncation=None, max_length=None):
            width = max(len(t) for t in texts)
            ids = torch.zeros(len(texts), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, text in enumerate(texts):
                codes = [3 + ord(c) % 90 for c in text]
                ids[row, width - len(codes) :] = torch.tensor(codes)
                mask[row, width - len(codes) :] = 1
            return {"input_ids": ids, "attention_mask": mask}

    model = tiny_model()
    stats = collect_calibration(
        model, [{"text": "hello there"}, {"text": "abc"}], tokenizer=CharTokenizer(), needs={"gate_abs"}, progress=False
    )
    assert stats.layers[0].tokens == 14 and stats.sequences == 2
    assert len(ffn_blocks(model)) == len(stats.layers)


def test_prompt_response_pairs_count_only_the_response_tokens():
    model = tiny_model()
    pairs = [([5, 6, 7, 8], [9, 10]), ([11, 12], [13, 14, 15])]
    stats = collect_calibration(model, pairs, needs={"inputs", "sample"}, layers=[1], progress=False)
    assert stats.layers[1].tokens == 5
    # the counted rows are the responses' FFN inputs, with the prompt as context
    captured = []
    handle = ffn_blocks(model)[1].module.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.inference_mode():
        for prompt, response in pairs:
            model(input_ids=torch.tensor([prompt + response]))
    handle.remove()
    expected = torch.cat([captured[0][0, 4:], captured[1][0, 2:]])
    sample = stats.layers[1].sample  # every counted row (fewer than the sample size), in random order
    order = [int(torch.cdist(row[None], expected).argmin()) for row in sample]
    assert sorted(order) == list(range(5))
    torch.testing.assert_close(sample, expected[order], rtol=0, atol=1e-5)


def test_teal_sample_is_uniform_over_tokens_and_seeded():
    """The sample for TEAL's down threshold and greedy search is drawn from every counted token,
    not the first ones in batch order: with far more tokens than sample rows it reaches the last texts."""
    import torch

    from caprese.methods.calibration import LayerCalibration, _reservoir

    def draw(seed, batches):
        stats = LayerCalibration(generator=torch.Generator().manual_seed(seed))
        for batch in batches:
            _reservoir(stats, batch, 64)
        return stats.sample

    tokens = torch.arange(4000, dtype=torch.float32)[:, None]  # row i holds token i
    one = draw(0, tokens.split(500))
    assert one.shape == (64, 1) and torch.equal(one, draw(0, tokens.split(500)))
    assert not torch.equal(one, draw(1, tokens.split(500)))
    assert len(set(one[:, 0].tolist())) == 64  # without replacement
    assert one[:, 0].max() > 3000 and one[:, 0].min() < 1000  # spread over the whole stream
    # uniform: each quarter of the stream gets about a quarter of the draws, over seeds
    counts = torch.zeros(4)
    for seed in range(50):
        counts += torch.bincount((draw(seed, tokens.split(700))[:, 0] // 1000).long(), minlength=4)
    assert ((counts / counts.sum()) - 0.25).abs().max() < 0.04
