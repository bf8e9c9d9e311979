"""Helpers of benchmarks/gpu_check.sh (run that script; these are its Python steps).

    python benchmarks/gpu_check.py build OUT --shape Llama-3.2-1B [--small] [--dtype bfloat16]
    python benchmarks/gpu_check.py adapter MODEL ADAPTER --dtype bfloat16 --device cuda

`build` writes a model folder with random weights of a reference config's shape (no download) and
the toy-math tokenizer (its ids fit any vocabulary); `--small` keeps the family but shrinks width
and depth for a CPU smoke run. `adapter` checks, on the given device and dtype, that applying an
adapter leaves its factors unchanged, that merged (eqs 9-10) equals unmerged teacher-forced
logits within the dtype's tolerance, that save -> load gives the same logits, and that every
output is finite. Each check prints a PASS or FAIL line; the exit status counts the failures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
"""Relative L2 distance allowed between merged and unmerged logits (one rounding order vs another)."""


def build(args) -> int:
    from transformers import AutoModelForCausalLM

    import caprese
    from caprese.models.loading import parse_dtype
    from caprese.models.reference import reference_config

    config = reference_config(args.shape)
    toy = Path(caprese.__file__).parent / "models" / "toy_math"
    if args.small:  # same family and layout, CPU-sized
        heads = 4
        config.update(
            {
                "hidden_size": 256,
                "intermediate_size": 1024,
                "num_hidden_layers": 4,
                "num_attention_heads": heads,
                "num_key_value_heads": 2,
                "head_dim": 256 // heads,
                "vocab_size": 512,
            }
        )
    config.update(
        {
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "initializer_range": 0.02,
            "max_position_embeddings": 2048,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(args.dtype))
    out = Path(args.out)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"built {out}: {args.shape}{' (small)' if args.small else ''}, {config.num_hidden_layers} layers, "
        f"D {config.hidden_size}, D_FF {config.intermediate_size}, {params / 1e6:.1f}M parameters, {args.dtype}"
    )
    return 0


def check(name: str, ok: bool, detail: str = "") -> int:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return 0 if ok else 1


def adapter(args) -> int:
    from caprese.distill.adapter import CapreseAdapter
    from caprese.models.loading import load_model

    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    dtype = next(model.parameters()).dtype
    loaded = CapreseAdapter.load(args.adapter, model)
    ids = torch.tensor(
        [tok("Ann has 12 eggs. First: 12 * 2 = 24. Second: 24 - 5 = 19. #### 19")["input_ids"]] * 2, device=model.device
    )
    prompt_lengths = [8, 11]
    before = {k: v.clone() for k, v in loaded.tensors().items()}
    before_dtypes = {layer: c.L.dtype for layer, c in loaded.corrections.items()}

    def logits(adapter_, merged: bool | None) -> torch.Tensor:
        """Teacher-forced logits under the adapter (merged or not), or of its method alone (None)."""
        context = adapter_.choice.apply(model, tok) if merged is None else adapter_.apply(model, tok, merged=merged)
        with context as session, torch.inference_mode():
            with session.teacher_forced(prompt_lengths):
                return model(ids).logits.float()

    failures = 0
    unmerged = logits(loaded, False)
    failures += check(
        "adapter unchanged by apply",
        all(torch.equal(before[k], v) for k, v in loaded.tensors().items())
        and before_dtypes == {layer: c.L.dtype for layer, c in loaded.corrections.items()},
        f"factors and their dtype {next(iter(before_dtypes.values()))} after applying on a {dtype} model",
    )
    failures += check("unmerged logits finite", bool(torch.isfinite(unmerged).all()))
    if loaded.kind == "caprese":
        merged = logits(loaded, True)
        distance = ((merged - unmerged).norm() / unmerged.norm()).item()
        failures += check(
            "merged = unmerged (teacher-forced)",
            distance <= TOLERANCE[dtype] and bool(torch.isfinite(merged).all()),
            f"relative distance {distance:.2e} (allowed {TOLERANCE[dtype]:.0e} in {dtype})",
        )
    changed = ((logits(loaded, None) - unmerged).norm() / unmerged.norm()).item()
    failures += check("the path changes the method's output", changed > 0, f"relative change {changed:.2e}")
    folder = Path(args.adapter).parent / "roundtrip"
    loaded.save(folder)
    again = CapreseAdapter.load(folder, model)
    same = logits(again, False)
    failures += check("adapter save -> load -> same logits", torch.equal(same, unmerged))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--shape", default="Llama-3.2-1B")
    b.add_argument("--dtype", default="bfloat16")
    b.add_argument("--small", action="store_true")
    a = sub.add_parser("adapter")
    a.add_argument("model")
    a.add_argument("adapter")
    a.add_argument("--dtype", default="bfloat16")
    a.add_argument("--device", default="cuda")
    args = parser.parse_args()
    return build(args) if args.command == "build" else min(adapter(args), 100)


if __name__ == "__main__":
    sys.exit(main())
