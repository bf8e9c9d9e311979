"""`model.generate` with the KV cache: a left-padded batch decodes exactly like each prompt alone."""

import pytest
import torch
from test_methods_exact import IDS, VARIANTS, calibration_set, sparsity_for

from caprese.methods import apply_method, collect_calibration
from caprese.testing import tiny_model

NEW_TOKENS = 10


def generate(model, prompts, pad_id=0):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        pad_token_id=pad_id,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
    )
    return out[:, width:].tolist()


@pytest.fixture(scope="module")
def model_and_prompts():
    model = tiny_model("LlamaForCausalLM", intermediate_size=128)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 96, (n,), generator=g).tolist() for n in (4, 11, 7)]
    stats = collect_calibration(model, calibration_set(), needs={"gate_abs", "inputs", "sample"}, progress=False)
    return model, prompts, stats


@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
def test_batch_of_three_generates_like_each_prompt_alone(model_and_prompts, name, options):
    model, prompts, stats = model_and_prompts
    kwargs = dict(sparsity=sparsity_for(name, 0.5), calibration=stats, **options)
    with torch.inference_mode():
        dense = generate(model, prompts)
        with apply_method(model, name, **kwargs) as session:
            batched = generate(model, prompts)
            alone = [generate(model, [p])[0] for p in prompts]
            if name == "griffin":
                assert session.kept_neurons(0).shape == (1, 64)  # the last prefill was a single prompt
    assert batched == alone
    if name != "dense":
        assert batched != dense  # the method changed what was generated
