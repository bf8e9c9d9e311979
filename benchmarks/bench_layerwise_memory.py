"""Peak memory of layer-wise distillation (eq 7) at two data sizes (target: large/small ≤ 1.2).

    python benchmarks/bench_layerwise_memory.py [--model smollm2-135m] [--small 64] [--large 512]
        [--epochs 2] [--layers first_half] [--threads 2]

Each size runs in its own process (a fresh peak): the model is loaded, toy-math distillation rows
(question, worked solution) are tokenized, and `distill(..., stage="layerwise")` trains GRIFFIN 50%
corrections at rank 16, batch 128, for `--epochs` epochs (two: the second replays the first's
activations). The child reports its peak resident set size (`ru_maxrss`) and its resident size just
before distillation, so the table shows both the whole process and what distillation itself added.
Teacher activations of 512 samples on SmolLM2 (first half: 15 layers × 576 dims × 2 tensors) would be
several hundred MB if they were held in memory; streamed, the peak does not depend on the samples.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from caprese.data import toy_math
    from caprese.distill.api import distill
    from caprese.distill.batches import tokenize_pairs
    from caprese.distill.layerwise import LayerwiseConfig
    from caprese.distill.teacher import MethodChoice
    from caprese.models.loading import load_model

    model, tokenizer = load_model(args.model)
    rows = [
        {"prompt": row["question"], "response": row["answer"]}
        for row in toy_math.generate_rows(args.samples, split="distill")
    ]
    before = current_rss_mib()
    peak_before = peak_rss_mib()
    start = time.perf_counter()
    adapter = distill(
        model,
        tokenizer,
        rows,
        MethodChoice("griffin", 0.5, args.layers),
        rank=16,
        stage="layerwise",
        layerwise=LayerwiseConfig(epochs=args.epochs, batch_size=128),
        progress=False,
    )
    seconds = time.perf_counter() - start
    tokens = sum(len(pair.response) for pair in tokenize_pairs(tokenizer, rows))
    print(
        json.dumps(
            {
                "samples": args.samples,
                "peak_rss_mib": peak_rss_mib(),
                "rss_before_mib": before,
                "peak_before_mib": peak_before,
                "seconds": seconds,
                "layers": len(adapter.corrections),
                "generated_tokens": tokens,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--large", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layers", default="first_half")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)  # set for the child process
    args = parser.parse_args()
    if args.samples is not None:
        child(args)
        return
    results = {}
    for samples in (args.small, args.large):
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--epochs",
            str(args.epochs),
            "--layers",
            args.layers,
            "--threads",
            str(args.threads),
            "--samples",
            str(samples),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{samples} samples failed:\n{done.stderr[-3000:]}")
        results[samples] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"layer-wise distillation, {args.model}, GRIFFIN 50% {args.layers}, rank 16, batch 128, {args.epochs} epochs")
    for samples, r in results.items():
        print(
            f"  {samples:>5} samples ({r['generated_tokens']} generated tokens, {r['layers']} layers): "
            f"peak RSS {r['peak_rss_mib']:8.1f} MiB (before distillation {r['rss_before_mib']:.1f}; "
            f"added {r['peak_rss_mib'] - r['rss_before_mib']:.1f}), {r['seconds']:.1f} s"
        )
    small, large = results[args.small], results[args.large]
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(
        f"peak RSS ratio {args.large}/{args.small} samples: {ratio:.3f} "
        f"(target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
