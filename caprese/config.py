"""Every training, generation and evaluation default in one place: the distillation stages, kinds
and starting points, the layer-wise (eq 7) and end-to-end (eq 8) settings, how responses are
generated (`GenerationConfig`) and what a configuration is evaluated on (`EvalConfig`), as
dataclasses validated in `__post_init__` whose `metadata={"help": ...}` the CLI (`caprese distill`)
and the experiment (`caprese.experiment.ExperimentConfig`, which nests them) read.

Torch-free on purpose: sweep spec checking and notebooks import it without loading a model stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .data.tasks import check_task_levels
from .data.texts import TEXT_SETS
from .errors import CapreseError
from .registry import check_choice, check_int, check_positive, check_range, check_text

KINDS = ("caprese", "lora")
"""caprese: the x L R path beside the efficient FFN; lora: the eq-11 baseline inside it."""
STAGES = ("closed_form", "layerwise", "e2e")
"""closed_form: eq 7 solved exactly; layerwise: eq 7 with Adam; e2e: layer-wise, then eq 8."""
LORA_SCOPES = ("kept", "full")
"""The LoRA baseline's reach: kept (its factors act on GRIFFIN's kept neurons E only) or full (the
paper's literal eq 11: masked weights plus LoRA on the full matrices, pruned neurons can come back)."""
INITS = ("random", "closed_form")
"""Layer-wise starting point: R = 0 with a small random L (the paper), or eq 7's exact minimiser."""
DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
"""Model dtypes by name (caprese.models.loading.DTYPES maps each to torch; a test keeps them in step)."""


def check_rank(rank: object, hidden_size: int | None = None) -> None:
    """A rank is an integer in 1..D (1.. while D is not known yet)."""
    if (
        isinstance(rank, bool)
        or not isinstance(rank, int)
        or rank < 1
        or (hidden_size is not None and rank > hidden_size)
    ):
        upper = "D" if hidden_size is None else f"D={hidden_size}"
        raise CapreseError(f"rank {rank!r} is out of range (allowed: integers 1..{upper})")


def check_patience(patience: object, validation_fraction: float) -> None:
    """Early stopping needs a validation split to watch."""
    check_int("patience", patience, 0)
    if patience and not validation_fraction:
        raise CapreseError(f"patience {patience!r} needs a validation split (validation_fraction > 0, e.g. 0.1)")


@dataclass
class LayerwiseConfig:
    """Layer-wise distillation (eq 7); defaults follow the paper's table 8 where it gives one."""

    rank: int = field(default=64, metadata={"help": "rank r of each low-rank path (1..D)"})
    lr: float = field(default=1e-3, metadata={"help": "layer-wise learning rate (paper: 1e-3)"})
    batch_size: int = field(
        default=64,
        metadata={
            "help": "layer-wise samples (sequences) per step; each step uses all their generated tokens (paper: 128)"
        },
    )
    epochs: int = field(default=20, metadata={"help": "layer-wise epochs (paper: 20)"})
    warmup_fraction: float = field(default=0.02, metadata={"help": "linear warm-up share of the steps (paper: 2%)"})
    init: str = field(
        default="random",
        metadata={
            "help": "random (R = 0, L small random; the paper) | closed_form (start from eq 7's exact minimiser)"
        },
    )
    ridge: float = field(default=1e-2, metadata={"help": "closed form's ridge, relative to the mean eigenvalue of XᵀX"})
    """Why this large: the path sees only math inputs; an unregularised fit amplifies directions that
    math barely uses, and other text does (measured on toy-math, GRIFFIN 50% first half, r 16: ridge
    1e-6 took the language task from 99.5% to 2%, 1e-2 kept it at 98% and fit math better)."""
    seed: int = field(default=0, metadata={"help": "seed of L's initialisation and the batch order"})
    cache_gib: float = field(
        default=16.0,
        metadata={
            "help": "disk (a temporary folder under $TMPDIR) for teacher activations replayed after the first epoch; "
            "batches beyond it rerun the teacher; memory does not depend on it; 0 disables the spill"
        },
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the distillation rows held out (drawn with seed) for a validation loss after every "
            "layer-wise and end-to-end epoch; never trained on; 0 disables"
        },
    )
    patience: int = field(
        default=0,
        metadata={
            "help": "stop layer-wise training after this many epochs without a lower validation loss and keep the "
            "best epoch's factors (0: train every epoch)"
        },
    )

    def __post_init__(self):
        check_rank(self.rank)
        check_positive("lr", self.lr)
        check_int("batch_size", self.batch_size)
        check_int("epochs", self.epochs)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_choice("init", self.init, INITS)
        check_range("ridge", self.ridge, 0.0, float("inf"), high_open=True)
        check_range("cache_gib", self.cache_gib, 0.0, float("inf"), high_open=True)
        check_range("validation_fraction", self.validation_fraction, 0.0, 1.0, high_open=True)
        check_patience(self.patience, self.validation_fraction)

    def check(self, hidden_size: int) -> None:
        """The checks that need the model: the rank fits D."""
        self.__post_init__()
        check_rank(self.rank, hidden_size)


@dataclass
class E2EConfig:
    """End-to-end distillation (eq 8)."""

    lr: float = field(default=1e-4, metadata={"help": "end-to-end learning rate (paper: 4e-6..2e-4)"})
    batch_size: int = field(default=16, metadata={"help": "end-to-end samples per step (paper: 16)"})
    epochs: int = field(default=3, metadata={"help": "end-to-end epochs (paper: 3)"})
    warmup_fraction: float = field(default=0.02, metadata={"help": "linear warm-up share of the steps (paper: 2%)"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the e2e backward pass"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the batch order"})
    patience: int = field(
        default=0,
        metadata={
            "help": "stop end-to-end training after this many epochs without a lower validation loss and keep the "
            "best epoch's factors (0: train every epoch)"
        },
    )

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_int("batch_size", self.batch_size)
        check_int("epochs", self.epochs)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_int("patience", self.patience, 0)

    def check(self) -> None:
        self.__post_init__()


@dataclass(frozen=True)
class GenerationConfig:
    """How responses are generated (`caprese.evaluate.generation.generate`): greedy at temperature 0,
    nucleus sampling above it, seeded and without side effects on the global RNG."""

    max_new_tokens: int = field(default=256, metadata={"help": "new tokens per response at most"})
    batch_size: int = field(default=32, metadata={"help": "prompts generated together"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0: greedy decoding)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling's probability mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed (unused when greedy)"})

    def __post_init__(self):
        check_int("max_new_tokens", self.max_new_tokens)
        check_int("batch_size", self.batch_size)
        check_range("temperature", self.temperature, 0.0, 100.0)
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_int("seed", self.seed, 0)

    def check(self) -> GenerationConfig:
        """Validation runs in __post_init__; kept for callers of the former `GenerationConfig.check()`."""
        return self

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def greedy(self) -> GenerationConfig:
        return replace(self, temperature=0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "decoding": "sampling" if self.sampling else "greedy"}


@dataclass(frozen=True)
class EvalConfig:
    """What one configuration is evaluated on (`caprese.evaluate.run.evaluate_model`, the experiment):
    greedy task accuracy, language, pass@k coverage, teacher-forced text sets and FFN error."""

    task: str = field(default="toy-math", metadata={"help": "evaluation task (caprese.data.tasks)"})
    samples: int = field(default=100, metadata={"help": "task problems scored greedily (0: no task accuracy)"})
    seed: int = field(default=0, metadata={"help": "seed of generated evaluation sets"})
    levels: str = field(
        default="",
        metadata={
            "help": "comma-separated levels of a task that has them (toy-math, arithmetic), e.g. 1,2,3; empty: all"
        },
    )
    language_samples: int = field(
        default=50,
        metadata={"help": "short-answer language questions and held-out texts for perplexity / KL (0: skip)"},
    )
    coverage_samples: int = field(
        default=0, metadata={"help": "N sampled responses per prompt for pass@k coverage (0: skip)"}
    )
    coverage_prompts: int = field(default=20, metadata={"help": "prompts used for coverage"})
    text_sets: str = field(
        default="",
        metadata={
            "help": "comma-separated held-out text sets scored teacher-forced (perplexity, KL(dense ‖ method) per "
            "text, bootstrap intervals): e.g. math-text,kjv-prose (caprese.data.texts; empty: skip)"
        },
    )
    text_samples: int = field(default=200, metadata={"help": "texts per teacher-forced set"})
    text_prefix_tokens: int = field(
        default=32,
        metadata={"help": "context tokens of each plain (prose) text; math texts' context is their question's prompt"},
    )
    text_tokens: int = field(
        default=64, metadata={"help": "continuation tokens scored per text at most (the same cap for every set)"}
    )
    error_samples: int = field(
        default=32,
        metadata={
            "help": "held-out worked solutions, teacher-forced, for per-layer FFN error with and without the path "
            "(0: skip)"
        },
    )

    def __post_init__(self):
        for name in ("task", "levels", "text_sets"):
            check_text(name, getattr(self, name))
        for name in ("samples", "language_samples", "coverage_samples", "error_samples", "seed"):
            check_int(name, getattr(self, name), 0)
        for name in ("coverage_prompts", "text_samples", "text_prefix_tokens"):
            check_int(name, getattr(self, name))
        check_int("text_tokens", self.text_tokens, 2)  # the first continuation token is not scored
        self.level_numbers()  # bad levels fail here, before any model loads
        for name in self.text_set_names():
            TEXT_SETS.get(name)  # unknown names fail here, with did-you-mean

    def level_numbers(self) -> tuple[int, ...] | None:
        """`levels` as a tuple (None: the task's own), checked against the task's levels."""
        if not self.levels.strip():
            return None
        try:
            levels = tuple(int(part) for part in self.levels.split(","))
        except ValueError:
            raise CapreseError(
                f"levels {self.levels!r} is not a comma-separated list of integers (e.g. 1,2,3)"
            ) from None
        return check_task_levels(self.task, levels)

    def text_set_names(self) -> list[str]:
        return [name.strip() for name in self.text_sets.split(",") if name.strip()]


@dataclass
class LoraConfig:
    """The eq-11 LoRA baseline (kind "lora"); its rank is matched to Caprese's (`distill.lora.lora_rank_for`)."""

    scope: str = field(
        default="kept",
        metadata={
            "help": "kept (LoRA on GRIFFIN's kept neurons only) | full (the paper's eq 11: masked weights "
            "plus LoRA on the full matrices, so pruned neurons can come back)"
        },
    )

    def __post_init__(self):
        check_choice("lora_scope", self.scope, LORA_SCOPES)
