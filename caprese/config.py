"""Every training default in one place: the distillation stages, kinds and starting points, and the
layer-wise (eq 7) and end-to-end (eq 8) settings as dataclasses whose `metadata={"help": ...}`
the CLI (`caprese distill`) and the experiment notebook's `ExperimentConfig` read.

Torch-free on purpose: sweep spec checking and notebooks import it without loading a model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CapreseError
from .registry import check_choice, check_int, check_positive, check_range

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

    def __post_init__(self):
        check_rank(self.rank)
        check_positive("lr", self.lr)
        check_int("batch_size", self.batch_size)
        check_int("epochs", self.epochs)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_choice("init", self.init, INITS)
        check_range("ridge", self.ridge, 0.0, float("inf"), high_open=True)
        check_range("cache_gib", self.cache_gib, 0.0, float("inf"), high_open=True)

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

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_int("batch_size", self.batch_size)
        check_int("epochs", self.epochs)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)

    def check(self) -> None:
        self.__post_init__()


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
