"""Train the built-in `toy-math` model from scratch on CPU (seeded), then write its model card.

    python -m caprese.models.train_toy_math --out caprese/models/toy_math

The model is a small Llama (SwiGLU FFN, D_FF = 4*D) with a word+digit tokenizer, trained on a
mix of toy-math word problems (levels 1-5), toy-language story questions and plain story text.
Question/answer documents are trained on their response tokens only: the question's numbers are
random draws, so predicting them teaches nothing and would spend capacity on noise. Plain text
is trained on every token so held-out perplexity means something.

Documents are batched by similar length and right-padded; every document starts at position 0
exactly as at inference, and causal attention means real tokens never see the padding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from ..data import toy_language, toy_math
from ..data.prompts import plain_prompt, plain_response
from ..data.tasks import load_task_rows
from ..errors import CapreseError
from ..evaluate import GenerationConfig, evaluate_accuracy, perplexity
from ..io import atomic_write_text, read_json, write_json
from . import toy_tokenizer
from .loading import load_model

HELD_OUT_PER_LEVEL = 500  # the model card's evaluation size (per level, and for language)
EXCLUDED_HELD_OUT = 5000  # never train on the first this-many held-out problems of each task
TRAINING_RECORD = "training_record.json"  # command, arguments and measurements of the run
CARD_NUMBERS = "card_metrics.json"  # the model card's measured numbers, machine-readable
PERPLEXITY_TEXTS = 200


@dataclass
class Document:
    prompt: str | None  # None: plain text, trained on every token
    text: str


@dataclass(frozen=True)
class Mix:
    math: float = 0.6
    language: float = 0.2
    plain: float = 0.2


def held_out_questions(seed: int) -> set[str]:
    """Questions of the evaluation split, so training can skip them."""
    math_rows = toy_math.generate_rows(EXCLUDED_HELD_OUT, split="test", seed=seed)
    language_rows = toy_language.generate_rows(EXCLUDED_HELD_OUT, split="test", seed=seed)
    return {row["question"] for row in math_rows + language_rows}


def training_documents(n: int, seed: int, mix: Mix, exclude: set[str]) -> list[Document]:
    """`n` documents drawn from the three sources in the given proportions (seeded)."""
    rng = random.Random(f"toy-mix/{seed}")
    math_stream = toy_math.iter_problems(split="train", seed=seed)
    language_rng = toy_language.split_rng("qa", "train", seed)
    text_rng = toy_language.split_rng("text", "train", seed)
    docs = []
    while len(docs) < n:
        draw = rng.random()
        if draw < mix.math:
            problem = next(math_stream)
            question, answer = problem.question, problem.answer
        elif draw < mix.math + mix.language:
            row = toy_language.make_question(language_rng)
            question, answer = row["question"], row["answer"]
        else:
            docs.append(Document(None, repeated(toy_language.make_text(text_rng))))
            continue
        if question not in exclude:
            docs.append(Document(plain_prompt(question), plain_response(answer)))
    return docs


def repeated(text: str) -> str:
    """A plain text shown twice in a row. Why: the second copy is predictable only by looking
    the first one up, a dense training signal for the in-context lookup both tasks rely on
    (measured: without it a CPU-budget run had not learned story lookups at all)."""
    return f"{text} {text}"


def vocabulary_texts(docs: list[Document]) -> list[str]:
    return [part for doc in docs for part in (doc.prompt, doc.text) if part is not None]


def encode_documents(tokenizer, docs: list[Document]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per document: <bos> prompt response <eos>, labels -100 on the prompt."""
    eos = tokenizer.eos_token_id
    prompts = [doc.prompt if doc.prompt is not None else "" for doc in docs]
    prompt_ids = tokenizer(prompts)["input_ids"]  # adds <bos>
    text_ids = tokenizer([doc.text for doc in docs], add_special_tokens=False)["input_ids"]
    encoded = []
    for doc, p_ids, t_ids in zip(docs, prompt_ids, text_ids):
        ids = p_ids + t_ids + [eos]
        first_label = len(p_ids) if doc.prompt is not None else 1  # plain text: all but <bos>
        labels = [-100] * first_label + ids[first_label:]
        encoded.append((ids, labels))
    return encoded


def length_bucketed_batches(encoded, batch_size: int, seed: int) -> list[list[int]]:
    """Batches of similar-length documents (little padding), in a seeded random order."""
    rng = random.Random(f"toy-batches/{seed}")
    order = list(range(len(encoded)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(encoded[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(encoded, indices: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(encoded[i][0]) for i in indices)
    width = -(-width // 8) * 8  # few distinct shapes: CPU kernels are re-planned per new shape
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    for row, i in enumerate(indices):
        seq, lab = encoded[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
    return ids, labels


def build_model(vocab_size: int, tokenizer, d_model: int, layers: int, head_dim: int):
    if d_model % head_dim:
        raise CapreseError(f"d_model {d_model} is not a multiple of head_dim {head_dim}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=d_model // head_dim,
        num_key_value_heads=d_model // head_dim,
        hidden_act="silu",
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def learning_rate(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, encoded, batches, args) -> list[dict]:
    """AdamW over the batches; returns the logged history (step, loss, lr, seconds)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    history, running, started = [], [], time.time()
    progress = tqdm(batches, desc="training toy-math", mininterval=10, file=sys.stdout)
    for step, indices in enumerate(progress):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, len(batches), args.lr, args.warmup)
        ids, labels = collate(encoded, indices, model.config.pad_token_id)
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == len(batches):
            entry = {
                "step": step + 1,
                "loss": sum(running) / len(running),
                "lr": group["lr"],
                "seconds": time.time() - started,
            }
            history.append(entry)
            running = []
            progress.set_postfix(loss=f"{entry['loss']:.4f}")
            print(
                f"step {entry['step']} loss {entry['loss']:.4f} lr {entry['lr']:.2e} {entry['seconds']:.0f}s",
                flush=True,
            )
    model.eval()
    return history


def save_checkpoint(model, tokenizer, out: Path) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def measure(folder: Path, per_level: int) -> dict:
    """The card's numbers, computed exactly as `caprese eval` computes them (same rows, settings)."""
    model, tokenizer = load_model(str(folder))
    settings = GenerationConfig()  # the CLI's defaults: greedy, batch 32, max 256 new tokens
    started = time.time()
    math_rows = load_task_rows("toy-math", per_level * len(toy_math.LEVELS), seed=0)
    math_result = evaluate_accuracy(model, tokenizer, math_rows, settings, desc="card: toy-math")
    language_rows = load_task_rows("toy-language", per_level, seed=0)
    language_result = evaluate_accuracy(model, tokenizer, language_rows, settings, desc="card: toy-language")
    texts = [row["text"] for row in toy_language.generate_texts(PERPLEXITY_TEXTS, split="test", seed=0)]
    return {
        "math": math_result.metrics,
        "language": language_result.metrics,
        "perplexity": perplexity(model, tokenizer, texts, prefix_tokens=1).perplexity,
        "eval_seconds": time.time() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config,
        "vocab_size": len(tokenizer),
    }


TARGETS = (("level 1", ("math", "1"), 0.95), ("level 3", ("math", "3"), 0.80), ("language", ("language", None), 0.95))


def targets_line(numbers: dict) -> str:
    """Which of the issue's accuracy targets this checkpoint meets, measured, not assumed."""
    parts = []
    for label, (task, level), target in TARGETS:
        metrics = numbers[task]["per_level"][level] if level else numbers[task]
        verdict = "met" if metrics["accuracy"] >= target else "NOT met"
        parts.append(f"{label} {metrics['accuracy'] * 100:.1f}% {verdict}")
    return "; ".join(parts)


def weights_command(command: str) -> str:
    """The training command without card flags: they do not change the checkpoint."""
    return " ".join(part for part in command.split(" ") if part not in ("--no-card", "--card-only"))


def card_text(folder: Path, record: dict, numbers: dict, per_level: int) -> str:
    cfg, args = numbers["config"], record["args"]
    size_mb = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
    rows = "\n".join(
        f"| {level} | {m['accuracy'] * 100:.1f}% ({m['correct']}/{m['count']}) | {m['mean_response_tokens']:.1f} |"
        for level, m in numbers["math"]["per_level"].items()
    )
    math, lang, mix = numbers["math"], numbers["language"], Mix()
    n_math = per_level * len(toy_math.LEVELS)
    return f"""# toy-math

A small Llama (SwiGLU FFN) trained from scratch on CPU for caprese's miniature reproduction of
Caprese: a model whose long chains of arithmetic should break under FFN sparsity while its
non-arithmetic reading task holds up. Loading it (`load_model("toy-math")`) never trains.

## Architecture

| | |
|---|---|
| class | `LlamaForCausalLM` (SwiGLU: `down(silu(gate(x)) * up(x))`) |
| layers | {cfg.num_hidden_layers} |
| hidden size D | {cfg.hidden_size} |
| FFN size D_FF | {cfg.intermediate_size} (= 4·D) |
| attention heads | {cfg.num_attention_heads} of dim {cfg.hidden_size // cfg.num_attention_heads} |
| vocabulary | {numbers["vocab_size"]} tokens (word level, every digit its own token) |
| parameters | {numbers["parameters"] / 1e6:.2f} M (tied input/output embeddings), {size_mb:.1f} MB safetensors (float32) |

The tokenizer (`tokenizer.json`, loads with `AutoTokenizer.from_pretrained`) splits text into
template words and single digits, each piece carrying its leading space, so
`decode(encode(text)) == text` for all task text. Out-of-vocabulary words become `<unk>`.

## Prompt format

```
Question: Ann has 12 shells. First, she finds 7 more shells. Second, she has 3 times as many shells. How many shells does Ann have now?
Please reason step by step.
Answer: First: 12 + 7 = 19.
Second: 19 * 3 = 57.
#### 57<eos>
```

Each step names the sentence it uses and applies that sentence's operation to the previous
result. Toy-language prompts have the same frame: a four-sentence story stating one fact of each
kind (an object's colour, a home city, a pastime, the day of an outing) and a question about one
kind, e.g. `Question: Sam likes to swim. Ann's ball is red. Tom lives in Rome. On Friday, Tom
went to the beach with Sam. Where does Tom live?` answered by `Tom lives in Rome.` and `#### Rome`.

## Training data

Generated on the fly by `caprese.data.toy_math` and `caprese.data.toy_language` (split `train`,
seed {args["seed"]}), {record["documents"]} documents,
{record["tokens"]} tokens: {mix.math:.0%} toy-math word problems (levels 1-5 in equal shares; level = number
of chained operations: + and − of a single digit or whole tens that change one digit without
carrying, × 2-5 of values up to 19, and halving; every intermediate result in [0, 99]), {mix.language:.0%} toy-language story questions,
{mix.plain:.0%} plain story text (each text twice in a row: the second copy trains in-context
lookup). Questions of the held-out evaluation split (`test`, seed 0, first {EXCLUDED_HELD_OUT} of each task) are excluded.
Loss on response tokens only for question/answer documents (the question's numbers are random
draws, nothing to learn), on all tokens for plain text (so perplexity is meaningful).

## Training

```
{weights_command(record["command"])}
```

AdamW (β = 0.9, 0.98, weight decay {args["weight_decay"]}), peak learning rate {args["lr"]}, {args["warmup"] * 100:.0f}% linear warmup
then cosine decay to 10%, {args["steps"]} steps of {args["batch_size"]} documents, gradient clipping 1.0,
{args["threads"]} CPU threads, float32. Wall time {record["train_minutes"]:.1f} min of training on 2 shared CPU cores;
final training loss {record["final_loss"]:.4f}.

## Measured accuracy

Greedy decoding, held-out problems (split `test`, seed 0), {per_level} per level:

| level | accuracy | mean response tokens |
|---|---|---|
{rows}
| all | {math["accuracy"] * 100:.1f}% ({math["correct"]}/{math["count"]}) | {math["mean_response_tokens"]:.1f} |

| toy-language (short answer) | {lang["accuracy"] * 100:.1f}% ({lang["correct"]}/{lang["count"]}) |
|---|---|
| perplexity, {PERPLEXITY_TEXTS} held-out plain stories | {numbers["perplexity"]:.3f} |

Targets of issue 3 (L1 >= 95%, L3 >= 80%, language >= 95%): {targets_line(numbers)}.

Reproduce the tables (the same rows and settings this card used):

```
caprese eval --model toy-math --task toy-math --samples {n_math} --out runs/toy-math-card/math
caprese eval --model toy-math --task toy-language --samples {per_level} --out runs/toy-math-card/language
```

Evaluating all of this took {numbers["eval_seconds"] / 60:.1f} min on 2 CPU cores.
{recipe_section(folder)}
## Limitations

A toy: it knows only the task templates' vocabulary and arithmetic within the ranges above.
It is meant for testing efficient-FFN methods and Caprese corrections quickly on CPU, not for
anything else.
"""


def recipe_section(folder: Path) -> str:
    """The card's distillation recipe (`distillation_recipe.json`, kept across retraining), as text."""
    from .recipes import RECIPE_FILE

    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return ""
    recipe = json.loads(path.read_text())
    rows = "\n".join(
        f"| {stage} | {name} | {value} |"
        for stage in ("layerwise", "e2e")
        for name, value in recipe.get(stage, {}).items()
    )
    return f"""
## Distillation recipe

`caprese distill --model toy-math`, `caprese.distill.distill(...)` on this model and the sweep specs
use these settings (`{RECIPE_FILE}`) for every value the user does not give, and say so in one
line; other models get the paper's (`caprese/config.py`). {recipe.get("why", "")}

| stage | setting | value |
|---|---|---|
{rows}
"""


def write_card(folder: Path, record: dict, per_level: int = HELD_OUT_PER_LEVEL) -> Path:
    """Evaluate the checkpoint in `folder` and write its README.md (and the numbers as JSON)."""
    numbers = measure(folder, per_level)
    write_json(folder / CARD_NUMBERS, {k: v for k, v in numbers.items() if k != "config"})
    return atomic_write_text(folder / "README.md", card_text(folder, record, numbers, per_level))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32, help="documents per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=float, default=0.02, help="fraction of steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--card-only", action="store_true", help="skip training; re-evaluate --out and rewrite its card")
    p.add_argument("--no-card", action="store_true", help="train and save only; write the card later with --card-only")
    return p.parse_args(argv)


def run_training(args) -> dict:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    docs = training_documents(args.steps * args.batch_size, args.seed, Mix(), held_out_questions(0))
    vocab = toy_tokenizer.build_vocabulary(vocabulary_texts(docs))
    tokenizer = toy_tokenizer.save_hf_tokenizer(toy_tokenizer.build_tokenizer(vocab), out)
    encoded = encode_documents(tokenizer, docs)
    batches = length_bucketed_batches(encoded, args.batch_size, args.seed)[: args.steps]
    model = build_model(len(vocab), tokenizer, args.d_model, args.layers, args.head_dim)
    n_tokens = sum(len(encoded[i][0]) for batch in batches for i in batch)
    print(
        f"{len(docs)} documents, {n_tokens} tokens, vocabulary {len(vocab)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters",
        flush=True,
    )
    started = time.time()
    history = train(model, encoded, batches, args)
    minutes = (time.time() - started) / 60
    save_checkpoint(model, tokenizer, out)
    return {"train_minutes": minutes, "final_loss": history[-1]["loss"], "documents": len(docs), "tokens": n_tokens}


def rerun_with_passive_threads(argv) -> None:
    """Re-execute this script with OMP_WAIT_POLICY=PASSIVE unless it is already set.

    Why: on shared cores, OpenMP threads that busy-wait at every barrier stall whenever one of
    them is descheduled; measured here, 2 threads under load went from 1.1 s to 9.5 s per step.
    The variable only takes effect before torch starts, hence the re-exec.
    """
    if os.environ.get("OMP_WAIT_POLICY"):
        return
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    os.execve(sys.executable, [sys.executable, "-m", "caprese.models.train_toy_math", *argv], env)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.card_only:
        command = "python -m caprese.models.train_toy_math " + " ".join(shlex.quote(a) for a in argv)
        write_json(out / TRAINING_RECORD, {"command": command, "args": vars(args), **run_training(args)})
    if not args.no_card:
        write_card(out, read_json(out / TRAINING_RECORD))
    return 0


if __name__ == "__main__":
    rerun_with_passive_threads(sys.argv[1:])
    sys.exit(main())
