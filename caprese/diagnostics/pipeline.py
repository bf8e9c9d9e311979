"""The diagnostics run: greedy continuations, then one traced teacher-forced pass.

    result = run_diagnostics(model, tokenizer, prompts, DiagnoseConfig(samples=16))
    result.write("runs/diagnostics")

"Generated tokens" are the model's own greedy continuations of the prompts; the trace then runs
teacher-forced over prompt + continuation (`PhaseTracker.teacher_forced`), which equals prefill
plus token-by-token decode, in one forward per batch. Sparsity statistics cover every sample and
both phases; the reconstruction study fits its rank-r corrections on the generated tokens of the
even samples and measures them on the odd ones (`reconstruction.split_of`), on their generated
tokens (the paper's figure 2) and, with the same corrections, on their prompt tokens.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..arch import ffn_blocks
from ..data.prompts import build_prompt
from ..data.tasks import load_task_rows
from ..errors import CapreseError
from ..evaluate.generation import stop_token_ids  # the same end-of-sequence ids the evaluation uses
from ..io import atomic_write_bytes, read_jsonl, write_csv, write_json, write_jsonl
from ..lowrank import DEFAULT_RIDGE
from ..methods.forcing import teacher_forced_batch
from ..phase import PhaseTracker
from ..registry import check_range
from ..stats import (
    DEFAULT_DENSITIES,
    DEFAULT_EPSILONS,
    FFNStatistics,
    MagnitudeHistogram,
    StatsConfig,
    collect_statistics,
)
from ..stats.topk import check_densities
from ..trace import Trace, check_layers
from .reconstruction import OracleTopKProbe, ResidualStudy, check_ranks, default_ranks, oracle_labels, split_of

MIN_FIT_TOKENS_PER_DIM = 16  # fewer generated tokens per input dimension and rank-r fits overfit


@dataclass
class DiagnoseConfig:
    samples: int = field(default=16, metadata={"help": "prompts to generate from and trace"})
    layers: tuple[int, ...] | None = field(default=None, metadata={"help": "layer indices (None: all)"})
    densities: tuple[float, ...] = field(default=DEFAULT_DENSITIES, metadata={"help": "top-k densities d = k / D_FF"})
    ranks: tuple[int, ...] | None = field(default=None, metadata={"help": "correction ranks (None: D/32, D/16, D/8)"})
    epsilons: tuple[float, ...] = field(default=DEFAULT_EPSILONS, metadata={"help": "ε for fraction |Z| ≤ ε"})
    max_new_tokens: int = field(default=96, metadata={"help": "greedy continuation length"})
    batch_size: int = field(default=8, metadata={"help": "sequences per forward"})
    ridge: float = field(default=DEFAULT_RIDGE, metadata={"help": "relative ridge of the rank-r fit"})
    seed: int = field(default=0, metadata={"help": "task sampling seed"})

    def __post_init__(self):
        for name in ("samples", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CapreseError(f"{name} {value!r} must be an integer >= 1")
        if self.layers is not None:
            self.layers = tuple(self.layers)
        if self.ranks is not None:
            self.ranks = tuple(self.ranks)
        self.densities = check_densities(self.densities)  # fail before any generation runs
        self.epsilons = MagnitudeHistogram(self.epsilons).epsilons
        check_range("ridge", float(self.ridge), 0.0, float("inf"))


@dataclass
class GeneratedSample:
    index: int
    id: str
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str = ""


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1]  # the EOS itself was generated; what follows is padding
    return tokens


@torch.inference_mode()
def generate_continuations(
    model, tokenizer, prompts: Sequence[dict], *, max_new_tokens: int, batch_size: int, progress: bool = True
) -> list[GeneratedSample]:
    """Greedy continuations of `prompts` ({"id", "prompt"} rows), batched with left padding.

    Token ids, not text, are what the traced pass needs (re-tokenising text can change them),
    so this keeps `generate`'s own output ids up to and including the first end-of-sequence token.
    """
    device = next(model.parameters()).device
    eos = set(stop_token_ids(model, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    samples: list[GeneratedSample] = []
    bar = tqdm(total=len(prompts), desc="generate", unit="seq", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
        enc = tokenizer([r["prompt"] for r in rows], return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        width = enc["input_ids"].shape[1]
        for row, r in enumerate(rows):
            prompt = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            generated = _until_eos(out[row, width:].tolist(), eos)
            samples.append(
                GeneratedSample(
                    start + row,
                    str(r.get("id", start + row)),
                    prompt,
                    generated,
                    tokenizer.decode(generated, skip_special_tokens=True),
                )
            )
        bar.update(len(rows))
    bar.close()
    return samples


@dataclass
class DiagnosticsResult:
    model: str
    data: str
    config: DiagnoseConfig
    hidden_size: int
    intermediate_size: int
    num_layers: int
    ranks: tuple[int, ...]
    stats: FFNStatistics
    study: ResidualStudy
    samples: list[GeneratedSample]
    prompt_study: ResidualStudy | None = None  # the same errors on the eval split's prompt tokens

    @property
    def layers(self) -> list[int]:
        return list(self.stats.layers)

    def error_rows(self, phase: str = "generated") -> list[dict[str, Any]]:
        """Per (layer, density, rank) errors on the eval split's `phase` tokens (figure 2: generated)."""
        study = {"generated": self.study, "prompt": self.prompt_study}.get(phase, ...)
        if study is ...:
            raise CapreseError(f"phase {phase!r} is unknown (choose from: prompt, generated)")
        return [] if study is None else [{**row, "phase": phase} for row in study.rows()]

    def all_error_rows(self) -> list[dict[str, Any]]:
        return self.error_rows("generated") + self.error_rows("prompt")

    def figure2_rows(self) -> list[dict[str, Any]]:
        """Relative L2 error per (density, rank), averaged over the traced layers."""
        groups: dict[tuple[float, int], list[dict]] = {}
        for row in self.error_rows():
            groups.setdefault((row["density"], row["rank"]), []).append(row)
        out = []
        for (density, rank), rows in sorted(groups.items()):
            n = len(rows)
            out.append(
                {
                    "density": density,
                    "rank": rank,
                    "relative_l2": sum(r["relative_l2"] for r in rows) / n,
                    "cosine": sum(r["cosine"] for r in rows) / n,
                    "layers": n,
                    "tokens": rows[0]["tokens"],
                }
            )
        return out

    def rank_versus_density(self) -> list[dict[str, Any]]:
        """For each density d and rank r: error of top-k + rank r vs top-k at density d + r/D_FF.

        A rank-r correction merges into the pruned FFN as r extra neurons (docs/method.md eqs 9-10),
        so the comparable increase in density is r / D_FF. The rank-0 error there is measured when
        that density was run (`measured`: true; add it to the densities for an exact comparison),
        otherwise interpolated linearly between the neighbouring densities, which overstates it
        where the curve is convex; pairs outside the measured range are left out.
        """
        table = {(r["density"], r["rank"]): r["relative_l2"] for r in self.figure2_rows()}
        densities = sorted({d for d, _ in table})
        out = []
        for d in densities:
            for r in self.ranks:
                target = d + r / self.intermediate_size
                exact = [x for x in densities if abs(x - target) < 1e-9]
                if exact:
                    dense_error, measured = table[(exact[0], 0)], True
                else:
                    above = [x for x in densities if x > target]
                    below = [x for x in densities if x < target]
                    if not above or not below:
                        continue
                    lo, hi = max(below), min(above)
                    e_lo, e_hi = table[(lo, 0)], table[(hi, 0)]
                    dense_error, measured = e_lo + (e_hi - e_lo) * (target - lo) / (hi - lo), False
                out.append(
                    {
                        "density": d,
                        "rank": r,
                        "error_rank0": table[(d, 0)],
                        "error_with_rank": table[(d, r)],
                        "density_plus_r_over_dff": target,
                        "error_at_that_density": dense_error,
                        "measured": measured,
                        "rank_wins": table[(d, r)] < dense_error,
                    }
                )
        return out

    def warnings(self) -> list[str]:
        """Conditions under which the numbers mislead (shown by the CLI, stored in summary.json)."""
        out = []
        fit_tokens = min((int(acc.count) for acc in self.study.fits.values()), default=None)
        # measured on toy-math (D=128): ~580 fit tokens made every rank raise the held-out error
        if fit_tokens is not None and fit_tokens < MIN_FIT_TOKENS_PER_DIM * self.hidden_size:
            out.append(
                f"the rank-r fit saw {fit_tokens} generated tokens for D={self.hidden_size} inputs: "
                "corrections may overfit (held-out errors show it); use more --samples or --max-new-tokens"
            )
        return out

    def summary(self) -> dict[str, Any]:
        generated = [len(s.generated_ids) for s in self.samples]
        return {
            "model": self.model,
            "data": self.data,
            "config": asdict(self.config),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "layers": self.layers,
            "ranks": list(self.ranks),
            "samples": len(self.samples),
            "generated_tokens": sum(generated),
            "split": "sequence-level: even samples fit the rank-r corrections, odd samples measure errors",
            "figure2": self.figure2_rows(),
            "rank_versus_density": self.rank_versus_density(),
            "warnings": self.warnings(),
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        """Statistics (JSON + CSV), errors (JSON + CSV), generations, state and figures under `out`."""
        from . import plots  # matplotlib: only when figures are written

        out = Path(out)
        paths = {
            "summary": write_json(out / "summary.json", self.summary()),
            "stats_json": write_json(out / "stats.json", self.stats.summary()),
            "stats_csv": write_csv(out / "stats.csv", self.stats.rows()),
            "errors_json": write_json(out / "errors.json", self.all_error_rows()),
            "errors_csv": write_csv(out / "errors.csv", self.all_error_rows()),
            "figure2_csv": write_csv(out / "figure2.csv", self.figure2_rows()),
            "generations": write_jsonl(
                out / "generations.jsonl",
                [
                    {
                        "index": s.index,
                        "id": s.id,
                        "split": split_of(s.index),
                        "prompt_tokens": len(s.prompt_ids),
                        "generated_tokens": len(s.generated_ids),
                        "text": s.text,
                    }
                    for s in self.samples
                ],
            ),
        }
        buffer = io.BytesIO()
        state = {"stats": self.stats.state_dict(), "study": self.study.state_dict()}
        if self.prompt_study is not None:
            state["prompt_study"] = self.prompt_study.state_dict()
        torch.save(state, buffer)
        paths["state"] = atomic_write_bytes(out / "state.pt", buffer.getvalue())
        paths.update(plots.write_figures(self, out))
        return paths


def load_prompt_rows(data: str, samples: int, seed: int = 0) -> list[dict]:
    """The rows behind `load_prompts`, read without a tokenizer (so a bad --data fails before the
    model loads): {"id", "prompt"} rows of a .jsonl file with a "prompt" field, else task rows."""
    path = Path(str(data)).expanduser()
    if path.suffix == ".jsonl" and path.is_file():
        rows = read_jsonl(path)
        if rows and all("prompt" in row for row in rows):
            return [
                {"id": str(row.get("id", f"{path.stem}-{i}")), "prompt": str(row["prompt"])}
                for i, row in enumerate(rows[:samples])
            ]

    return load_task_rows(str(data), samples, seed)


def build_prompts(rows: Sequence[dict], tokenizer) -> list[dict]:
    return [
        row
        if "prompt" in row and "question" not in row
        else {"id": str(row["id"]), "prompt": build_prompt(tokenizer, row["question"])}
        for row in rows
    ]


def load_prompts(data: str, tokenizer, samples: int, seed: int = 0) -> list[dict]:
    """{"id", "prompt"} rows: a .jsonl file with a "prompt" field, or any task / file `caprese.data.tasks` knows."""
    return build_prompts(load_prompt_rows(data, samples, seed), tokenizer)


def run_diagnostics(
    model,
    tokenizer,
    prompts: Sequence[dict],
    config: DiagnoseConfig | None = None,
    *,
    model_name: str = "",
    data_name: str = "",
    progress: bool = True,
) -> DiagnosticsResult:
    """Generate, then trace statistics and the oracle top-k reconstruction study (see module docstring)."""
    config = config or DiagnoseConfig()
    if not prompts:
        raise CapreseError("no prompts to diagnose")
    blocks = ffn_blocks(model)
    layers = check_layers(config.layers, len(blocks))
    hidden, width = blocks[0].hidden_size, blocks[0].intermediate_size
    ranks = check_ranks(config.ranks if config.ranks is not None else default_ranks(hidden), hidden)
    prompts = list(prompts)[: config.samples]
    if ranks and len(prompts) < 2:
        raise CapreseError(
            f"rank-r corrections need at least 2 samples (one to fit, one to measure), got {len(prompts)}"
        )
    samples = generate_continuations(
        model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, progress=progress
    )
    stats = FFNStatistics.for_model(
        model, layers, StatsConfig(epsilons=config.epsilons, densities=config.densities), blocks=blocks
    )
    study = ResidualStudy(hidden, layers, oracle_labels(config.densities), ranks, ridge=config.ridge)
    prompt_study = study.measurer()
    probe = OracleTopKProbe(study, blocks, config.densities, prompt_study=prompt_study)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    splits = ("fit", "eval") if ranks else ("eval",)
    bar = tqdm(total=len(samples), desc="trace", unit="seq", disable=not progress)
    with (
        torch.inference_mode(),
        PhaseTracker(model) as tracker,
        collect_statistics(model, stats, tracker=tracker, blocks=blocks),
        Trace(model, probe.points, layers, callback=probe.callbacks(tracker), blocks=blocks),
    ):
        for split in splits:
            study.set_split(split)
            chosen = [s for s in samples if split_of(s.index) == split or len(splits) == 1]
            for start in range(0, len(chosen), config.batch_size):
                part = chosen[start : start + config.batch_size]
                batch = teacher_forced_batch([s.prompt_ids for s in part], [s.generated_ids for s in part], pad_id).to(
                    device
                )
                with tracker.teacher_forced(batch.prompt_lengths):
                    model(**batch.model_inputs(), use_cache=False)
                bar.update(len(part))
            if split == "fit":
                study.fit()
    bar.close()
    return DiagnosticsResult(
        model_name, data_name, config, hidden, width, len(blocks), ranks, stats, study, samples, prompt_study
    )
