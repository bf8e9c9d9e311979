"""Trace: hooks change nothing, clean up after themselves (also after exceptions and when nested),
report the right tensors at every canonical point, and stop early on request."""

import pytest
import torch

from caprese.arch import ffn_blocks
from caprese.errors import CapreseError
from caprese.testing import count_hooks, tiny_model
from caprese.trace import POINTS, StopForward, Trace, untraced

ARCHS = ["LlamaForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM", "Gemma2ForCausalLM"]


def _ids(model, batch=2, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, (batch, length), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_full_trace_leaves_logits_bitwise_equal_and_no_hook_behind(arch):
    model = tiny_model(arch, seed=1, num_hidden_layers=3)
    ids = _ids(model)
    before = count_hooks(model)
    seen = []
    with torch.inference_mode():
        plain = model(ids).logits
        with Trace(model, retain=True, callback=lambda layer, point, value: seen.append((layer, point))) as trace:
            assert count_hooks(model) == before + 3 * len(POINTS)
            traced = model(ids).logits
    assert torch.equal(plain, traced)  # bitwise, fp32
    assert count_hooks(model) == before == 0
    assert not trace.active
    assert seen == [(layer, point) for layer in range(3) for point in POINTS]  # firing order


def test_hooks_removed_after_an_exception_inside_the_context(tiny_llama):
    with pytest.raises(RuntimeError, match="boom"):
        with Trace(tiny_llama, points=["z", "ffn_out"]):
            assert count_hooks(tiny_llama) > 0
            raise RuntimeError("boom")
    assert count_hooks(tiny_llama) == 0


def test_hooks_removed_after_an_exception_inside_a_callback(tiny_llama):
    def fail(layer, value):
        raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        with torch.inference_mode(), Trace(tiny_llama, callback={"z": fail}):
            tiny_llama(_ids(tiny_llama))
    assert count_hooks(tiny_llama) == 0


def test_nested_traces_remove_only_their_own_hooks(tiny_llama):
    with Trace(tiny_llama, points=["ffn_in"]) as outer:
        outer_hooks = count_hooks(tiny_llama)
        with Trace(tiny_llama, points=["ffn_in", "z"], retain=True) as inner:
            assert count_hooks(tiny_llama) > outer_hooks
        assert count_hooks(tiny_llama) == outer_hooks and outer.active and not inner.active
        with pytest.raises(KeyError):
            with Trace(tiny_llama, points=["gate_act"]):
                raise KeyError("inner failure")
        assert count_hooks(tiny_llama) == outer_hooks
    assert count_hooks(tiny_llama) == 0


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM"])
def test_points_hold_the_ffn_equations(arch):
    model = tiny_model(arch, seed=2)
    blocks = ffn_blocks(model)
    with torch.inference_mode(), Trace(model, retain=True) as trace:
        model(_ids(model))
        for block in blocks:
            x = trace[block.index, "ffn_in"]
            assert x.shape[-1] == block.hidden_size and not x.requires_grad
            torch.testing.assert_close(trace[block.index, "z"], block.intermediate(x), atol=1e-6, rtol=0)
            torch.testing.assert_close(trace[block.index, "gate_act"], block.gate_activation(x), atol=1e-6, rtol=0)
            torch.testing.assert_close(trace[block.index, "ffn_out"], block.forward(x), atol=1e-6, rtol=0)
            if not block.gated:  # the activation's output is Z itself
                assert torch.equal(trace[block.index, "gate_act"], trace[block.index, "z"])


def test_only_requested_points_and_layers_are_hooked_and_nothing_is_kept_by_default():
    model = tiny_model(num_hidden_layers=4)
    got = []
    with (
        torch.inference_mode(),
        Trace(model, points=["z"], layers=[1, 3], callback={"z": lambda layer, v: got.append(layer)}) as trace,
    ):
        assert count_hooks(model) == 2
        model(_ids(model))
        assert trace.values() == {}
        with pytest.raises(CapreseError, match="retain=False"):
            trace[1, "z"]
    assert got == [1, 3]


def test_unknown_points_and_layers_raise_one_line_errors(tiny_llama):
    with pytest.raises(CapreseError, match="did you mean 'gate_act'"):
        Trace(tiny_llama, points=["gate_ac"])
    with pytest.raises(CapreseError, match=r"layer 5 does not exist \(allowed: 0..1\)"):
        Trace(tiny_llama, layers=[5])
    with pytest.raises(CapreseError, match="not an integer"):
        Trace(tiny_llama, layers=["1"])
    with pytest.raises(CapreseError, match="does not request"):
        Trace(tiny_llama, points=["z"], callback={"ffn_out": lambda layer, v: None})
    with Trace(tiny_llama, points=["z"], retain=True) as trace:
        with pytest.raises(CapreseError, match="no value for layer 0"):
            trace[0, "z"]


def test_shared_modules_are_refused_rather_than_misattributed():
    model = tiny_model()
    model.model.layers[1].mlp.act_fn = model.model.layers[0].mlp.act_fn
    with pytest.raises(CapreseError, match="share one"):
        with Trace(model, points=["gate_act"]):
            pass
    assert count_hooks(model) == 0


def test_stop_ends_the_forward_after_the_last_traced_layer():
    model = tiny_model(num_hidden_layers=4)
    reached = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: reached.append(i))
        for i, layer in enumerate(model.model.layers)
    ]
    after_forward = []
    with torch.inference_mode(), Trace(model, points=["z", "gate_act"], layers=[0, 1], stop=True, retain=True) as trace:
        model(_ids(model))
        after_forward.append(True)  # skipped: the forward raised StopForward, the trace swallowed it
    for h in handles:
        h.remove()
    assert reached == [0, 1] and after_forward == []
    assert trace.values().keys() == {(0, "gate_act"), (0, "z"), (1, "gate_act"), (1, "z")}
    assert count_hooks(model) == 0


def test_an_outer_stop_is_not_swallowed_by_an_inner_trace(tiny_llama):
    with Trace(tiny_llama, points=["z"], layers=[0], stop=True) as outer:
        with pytest.raises(StopForward):
            with Trace(tiny_llama, points=["ffn_out"]):
                raise StopForward(outer)


def test_callbacks_computing_through_the_model_do_not_feed_back_into_traces(tiny_llama):
    blocks = ffn_blocks(tiny_llama)
    counted = []

    def recompute(layer, z):
        blocks[layer].output(z * 0)  # calls down_proj again: must not reach any trace

    with (
        torch.inference_mode(),
        Trace(tiny_llama, points=["z"], callback={"z": lambda layer, v: counted.append(layer)}),
        Trace(tiny_llama, points=["z"], callback={"z": recompute}),
    ):
        tiny_llama(_ids(tiny_llama))
        with untraced():
            tiny_llama(_ids(tiny_llama))
    assert counted == [0, 1]


def test_ffn_points_follow_a_method_wrapper_installed_before_the_trace():
    from caprese.methods import apply_method
    from caprese.methods.forcing import teacher_forced_batch

    model = tiny_model(seed=4)
    batch = teacher_forced_batch([[5, 6, 7, 8]], [[9, 10, 11]], pad_id=0)
    with torch.inference_mode():
        with Trace(model, points=["ffn_out"], retain=True) as dense:
            model(**batch.model_inputs())
        with (
            apply_method(model, "topk", sparsity=0.5) as session,
            session.teacher_forced(batch.prompt_lengths),
            Trace(model, points=["ffn_out"], retain=True) as sparse,
        ):
            model(**batch.model_inputs())
    prompt, generated = ~batch.generated[0], batch.generated[0]
    assert torch.equal(sparse[0, "ffn_out"][0, prompt], dense[0, "ffn_out"][0, prompt])  # full FFN on the prompt
    assert not torch.allclose(sparse[0, "ffn_out"][0, generated], dense[0, "ffn_out"][0, generated])
    assert count_hooks(model) == 0
