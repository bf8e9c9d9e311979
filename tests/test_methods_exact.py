"""Exactness: sparsity 0 is the dense model; teacher-forced = prefill + incremental decode; teacher mode."""

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.methods import apply_method
from caprese.methods.forcing import incremental_logits, teacher_forced_batch
from caprese.testing import tiny_model

# every method, and every option that changes the computation path
VARIANTS = [
    ("dense", {}),
    ("topk", {}),
    ("griffin", {}),
    ("griffin", {"prune": True}),
    ("griffin", {"reselect_every": 2}),
    ("griffin", {"reselect_every": 3, "prune": True}),
    ("cats", {}),
    ("cats", {"threshold_source": "calibration"}),
    ("teal", {}),
    ("teal", {"allocation": "greedy"}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in VARIANTS]


def random_batch(seed=1, vocab=96, prompt_lengths=(5, 9, 3), continuation_lengths=(7, 4, 6)):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in prompt_lengths]
    continuations = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in continuation_lengths]
    return teacher_forced_batch(prompts, continuations)


def calibration_set(seed=2, vocab=96, n=6, length=16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (length,), generator=g) for _ in range(n)]


def sparsity_for(name, value):
    return 0.0 if name == "dense" else value


# every variant on Llama; every method (one path each) on a fused gate_up, a non-gated and a Gemma FFN
ARCH_CASES = [("LlamaForCausalLM", v) for v in VARIANTS] + [
    (arch, v)
    for arch in ("Phi3ForCausalLM", "GPTNeoXForCausalLM", "Gemma2ForCausalLM")
    for v in VARIANTS
    if v[1] in ({}, {"reselect_every": 3, "prune": True}, {"threshold_source": "calibration"})
]


@pytest.mark.parametrize("arch,variant", ARCH_CASES, ids=[f"{a[:-11]}-{IDS[VARIANTS.index(v)]}" for a, v in ARCH_CASES])
def test_sparsity_zero_reproduces_dense_logits_exactly(arch, variant):
    name, options = variant
    model = tiny_model(arch)
    batch = random_batch()
    valid = batch.attention_mask.bool()
    with torch.inference_mode():
        dense_tf = model(**batch.model_inputs()).logits
        dense_inc = incremental_logits(model, batch)
        with apply_method(
            model, name, sparsity=0.0, calibration=calibration_set(), progress=False, **options
        ) as session:
            with session.teacher_forced(batch.prompt_lengths):
                tf = model(**batch.model_inputs()).logits
            inc = incremental_logits(model, batch)
    if name == "griffin" and options.get("prune"):
        # batch > 1 decodes through a batched matmul, whose summation order differs from F.linear
        torch.testing.assert_close(tf[valid], dense_tf[valid], rtol=0, atol=1e-5)
        torch.testing.assert_close(inc[valid], dense_inc[valid], rtol=0, atol=1e-5)
    else:
        assert torch.equal(tf[valid], dense_tf[valid])
        assert torch.equal(inc[valid], dense_inc[valid])


def test_sparsity_zero_pruned_griffin_is_exact_at_batch_size_one():
    model = tiny_model()
    batch = random_batch(prompt_lengths=(6,), continuation_lengths=(5,))
    with torch.inference_mode():
        dense = incremental_logits(model, batch)
        with apply_method(model, "griffin", sparsity=0.0, prune=True):
            pruned = incremental_logits(model, batch)
    assert torch.equal(pruned, dense)


@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
def test_teacher_forced_equals_prefill_plus_incremental_decode(name, options):
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    batch = random_batch()
    valid = batch.attention_mask.bool()
    with torch.inference_mode():
        dense = model(**batch.model_inputs()).logits
        with apply_method(
            model, name, sparsity=sparsity_for(name, 0.5), calibration=calibration_set(), progress=False, **options
        ) as session:
            inc = incremental_logits(model, batch)
            with session.teacher_forced(batch.prompt_lengths):
                tf = model(**batch.model_inputs()).logits
    torch.testing.assert_close(tf[valid], inc[valid], rtol=0, atol=1e-5)
    if name != "dense":  # the method really acted on the generated tokens, and only there
        assert not torch.allclose(tf[batch.generated], dense[batch.generated], atol=1e-4)
    prompt = valid & ~batch.generated
    assert torch.equal(tf[prompt], dense[prompt])


@pytest.mark.parametrize(
    "name,options", [("griffin", {"reselect_every": 2}), ("cats", {})], ids=["griffin-rho2", "cats"]
)
def test_teacher_forced_with_per_sequence_prompt_lengths_matches_each_sequence_alone(name, options):
    """Prompts ending at different positions (whole sequences left padded): each equals its own decode."""
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    g = torch.Generator().manual_seed(5)
    pairs = [
        (torch.randint(3, 96, (p,), generator=g).tolist(), torch.randint(3, 96, (c,), generator=g).tolist())
        for p, c in ((4, 8), (9, 3), (6, 6))
    ]
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.zeros(len(pairs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    lengths = []
    for row, (p, c) in enumerate(pairs):
        seq = p + c
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
        lengths.append(width - len(c))  # prompt ends here, in padded coordinates
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode(), apply_method(model, name, sparsity=0.5, **options) as session:
        with session.teacher_forced(lengths):
            tf = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        for row, (p, c) in enumerate(pairs):
            alone = incremental_logits(model, teacher_forced_batch([p], [c]))[0]
            torch.testing.assert_close(tf[row, width - len(p) - len(c) :], alone, rtol=0, atol=1e-5)


def test_teacher_callback_residuals_equal_efficient_mode():
    """Teacher mode runs dense everywhere and reports FF(x) − FF̂(x) on generated tokens, with the
    per-sequence selection taken from each prompt exactly as efficient mode does."""
    model = tiny_model("LlamaForCausalLM", intermediate_size=128, num_hidden_layers=3)
    batch = random_batch()
    blocks = ffn_blocks(model)
    records = {}

    def callback(layer, x, residual, efficient):
        records[layer] = (x.clone(), residual.clone(), efficient.clone())

    with torch.inference_mode():
        dense = model(**batch.model_inputs()).logits
        with apply_method(model, "griffin", sparsity=0.5, reselect_every=3, teacher_callback=callback) as session:
            with session.teacher_forced(batch.prompt_lengths):
                teacher = model(**batch.model_inputs()).logits
            ffn_inputs = {}  # each layer's full FFN input in the teacher pass, to replay in efficient mode
            for b in blocks:
                handle = session.wrapper(b.index).register_forward_pre_hook(
                    lambda m, a, i=b.index: ffn_inputs.__setitem__(i, a[0])
                )
                with session.teacher_forced(batch.prompt_lengths):
                    model(**batch.model_inputs())
                handle.remove()
        assert torch.equal(teacher, dense)  # the model itself stayed dense
        assert sorted(records) == [0, 1, 2]
        generated = batch.generated
        for b in blocks:
            x_all = ffn_inputs[b.index]
            x, residual, efficient = records[b.index]
            assert torch.equal(x, x_all[generated])
            # replay the same x through the wrapper in efficient mode
            with apply_method(model, "griffin", sparsity=0.5, layers=[b.index], reselect_every=3) as session:
                wrapper = session.wrapper(b.index)
                with session.teacher_forced(batch.prompt_lengths):
                    model(**batch.model_inputs())  # attaches the tracker's phase for this layout
                    out = wrapper(x_all)  # a fresh prefill on the very same x
            expected = b.module(x_all)[generated] - out[generated]
            torch.testing.assert_close(residual, expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(efficient, out[generated], rtol=0, atol=1e-6)
            assert residual.abs().max() > 0


def test_correction_is_added_on_generated_tokens_only():
    model = tiny_model("LlamaForCausalLM")
    batch = random_batch()
    valid = batch.attention_mask.bool()
    prompt = valid & ~batch.generated
    shift = torch.nn.Linear(32, 32)
    with torch.inference_mode():
        with apply_method(model, "cats", sparsity=0.5) as session:
            with session.teacher_forced(batch.prompt_lengths):
                plain = model(**batch.model_inputs()).logits
            session.set_correction(0, shift)
            with session.teacher_forced(batch.prompt_lengths):
                corrected = model(**batch.model_inputs()).logits
            corrected_inc = incremental_logits(model, batch)
    assert torch.equal(corrected[prompt], plain[prompt])
    assert not torch.allclose(corrected[batch.generated], plain[batch.generated])
    torch.testing.assert_close(corrected[valid], corrected_inc[valid], rtol=0, atol=1e-5)


def test_gradients_reach_a_correction_but_not_the_frozen_weights():
    model = tiny_model("LlamaForCausalLM")
    for p in model.parameters():
        p.requires_grad_(False)
    batch = random_batch()
    correction = torch.nn.Linear(32, 32)
    with apply_method(model, "griffin", sparsity=0.5, layers=[1]) as session:
        session.set_correction(1, correction)
        with session.teacher_forced(batch.prompt_lengths):
            loss = model(**batch.model_inputs()).logits[batch.generated].pow(2).mean()
    loss.backward()
    assert correction.weight.grad is not None and correction.weight.grad.abs().sum() > 0
