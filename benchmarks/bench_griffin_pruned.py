"""Decode-step time of truly pruned GRIFFIN vs the dense FFN on one Llama-3-8B-sized layer slice.

    python benchmarks/bench_griffin_pruned.py [--sparsity 0.5] [--batch 1 2] [--repeats 10]

One FFN (D = 4096, D_FF = 14336, random weights) decodes one token per sequence. A decode step is
memory bound: the time is the time to read the weights. Pruned GRIFFIN reads 3·k·D weights per
sequence instead of 3·D_FF·D, so at batch 1 the bytes-moved limit of the time ratio is k / D_FF;
with per-sequence kept sets a batch of B reads B separate slices, so the limit is B·k / D_FF (the
dense weights are read once for the whole batch). The masked simulation is printed too: it reads
everything and does extra work, which is why decode speed needs the pruned path.

The limit assumes the dense step is memory bound at every batch size. On few cores it is not: with
2 threads here one linear of (B, 4096) by (4096, 14336) took 13.7 ms at B = 1 and 28.9 ms at B = 2
(about 8 GFLOP/s), so at B >= 2 dense time grows with B, and pruned/dense falls below the bytes limit.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from caprese.arch.adapters import ADAPTERS
from caprese.arch.ffn import FFNBlock
from caprese.methods.griffin import Griffin, GriffinConfig

D, D_FF, PROMPT = 4096, 14336, 16


def llama_ffn_slice(dtype: torch.dtype) -> FFNBlock:
    """One Llama MLP with random weights, seen through the Llama adapter (no full model needed)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    with torch.device("meta"):
        mlp = LlamaMLP(LlamaConfig(hidden_size=D, intermediate_size=D_FF))
    mlp = mlp.to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            linear.weight.normal_(0, 0.02)
    layer = torch.nn.Module()
    layer.mlp = mlp
    adapter = ADAPTERS.get("LlamaForCausalLM")
    return FFNBlock(
        index=0,
        adapter=adapter,
        layer=layer,
        module=mlp,
        down=mlp.down_proj,
        act=mlp.act_fn,
        gate=mlp.gate_proj,
        up=mlp.up_proj,
        gate_up=None,
        hidden_size=D,
        intermediate_size=D_FF,
    )


def median_ms(fn, repeats: int) -> float:
    for _ in range(2):  # warm-up: first calls allocate
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    block = llama_ffn_slice(dtype)
    griffin = Griffin(block, args.sparsity, GriffinConfig(prune=True))
    masked = Griffin(block, args.sparsity, GriffinConfig(prune=False))
    print(
        f"FFN slice D={D} D_FF={D_FF} {args.dtype}, sparsity {args.sparsity}: k={griffin.k}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'batch':>5} {'dense ms':>9} {'pruned ms':>10} {'masked ms':>10} {'pruned/dense':>13} "
        f"{'bytes limit':>12} {'slice ms':>9} {'max |pruned-masked|':>20}"
    )
    with torch.inference_mode():
        for batch in args.batch:
            prompt = torch.randn(batch, PROMPT, D, dtype=dtype)
            every = torch.ones(batch, PROMPT, dtype=torch.bool)
            start = time.perf_counter()
            state = griffin.prepare(prompt, every)  # selection + the once-per-prefill slicing
            prepare_ms = 1000 * (time.perf_counter() - start)
            masked_state = masked.prepare(prompt, every)
            x = torch.randn(batch, 1, D, dtype=dtype)
            dense_ms = median_ms(lambda x=x: block.module(x), args.repeats)
            pruned_ms = median_ms(lambda x=x, state=state: griffin.efficient(x, state), args.repeats)
            masked_ms = median_ms(lambda x=x, state=masked_state: masked.efficient(x, state), args.repeats)
            gap = (griffin.efficient(x, state) - masked.efficient(x, masked_state)).abs().max().item()
            limit = batch * griffin.k / D_FF
            print(
                f"{batch:>5} {dense_ms:>9.2f} {pruned_ms:>10.2f} {masked_ms:>10.2f} {pruned_ms / dense_ms:>13.3f} "
                f"{limit:>12.3f} {prepare_ms:>9.1f} {gap:>20.2e}"
            )
            del state, masked_state
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
