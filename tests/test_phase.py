"""Prompt vs generated tokens, as every efficient method and statistic sees them."""

import pytest
import torch

from caprese.errors import CapreseError
from caprese.phase import PhaseTracker
from caprese.testing import count_hooks, tiny_model


def _record(model, tracker):
    seen = []
    block = model.model.layers[0].mlp
    handle = block.register_forward_hook(lambda *a: seen.append(tracker.phase()))
    return seen, handle


def test_generate_prefill_then_decode_with_left_padding():
    model = tiny_model("LlamaForCausalLM")
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with PhaseTracker(model) as tracker:
        seen, handle = _record(model, tracker)
        model.generate(  # min_new_tokens: no sequence ends early (tests/test_measured_compute.py covers that)
            input_ids=ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0
        )
        handle.remove()
    prefill, *decode = seen
    assert prefill.prefill and prefill.prompt.all()
    assert prefill.prompt_valid.tolist() == mask.bool().tolist()
    assert not prefill.any_generated
    assert len(decode) == 2
    for phase in decode:
        assert not phase.prefill and phase.generated.all() and phase.prompt.shape == (2, 1)
    assert count_hooks(model) == 0


def test_teacher_forced_lengths_split_each_sequence():
    model = tiny_model("LlamaForCausalLM")
    ids = torch.tensor([[0, 9, 5, 6, 7], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    with PhaseTracker(model) as tracker:
        seen, handle = _record(model, tracker)
        with tracker.teacher_forced([3, 2]):
            model(ids, attention_mask=mask)
        model(ids)  # outside the teacher-forced context: a plain forward is all prompt
        handle.remove()
    teacher, plain = seen
    assert teacher.prompt.tolist() == [[True, True, True, False, False], [True, True, False, False, False]]
    assert teacher.prompt_valid.tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    assert plain.prompt.all()


def test_teacher_forced_checks_batch_size_and_lengths():
    model = tiny_model("LlamaForCausalLM")
    with PhaseTracker(model) as tracker:
        with pytest.raises(CapreseError, match="prompt_lengths"):
            with tracker.teacher_forced([-1]):
                pass
        with tracker.teacher_forced([1, 2, 3]):
            with pytest.raises(CapreseError, match="3 entries for a batch of 1"):
                model(torch.tensor([[1, 2, 3]]))
    assert count_hooks(model) == 0


def test_manual_cache_decode_counts_as_generated():
    from transformers import DynamicCache

    model = tiny_model("LlamaForCausalLM")
    with PhaseTracker(model) as tracker:
        seen, handle = _record(model, tracker)
        cache = DynamicCache(config=model.config)
        model(torch.tensor([[4, 5, 6]]), cache=cache, use_cache=True)
        model(torch.tensor([[7]]), cache=cache, use_cache=True)
        handle.remove()
    assert seen[0].prompt.all() and seen[1].generated.all()


def test_phase_outside_a_forward_is_an_error():
    tracker = PhaseTracker(tiny_model("LlamaForCausalLM"))
    with pytest.raises(CapreseError, match="no forward in flight"):
        tracker.phase()
