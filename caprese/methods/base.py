"""What every efficient FFN method is: a registered class with a dataclass config.

A method is one module: everything the rest of caprese needs to know about it lives on its class
(see docs/architecture.md, "Adding a method"):

    config_class            its options, a dataclass with `field(metadata={"help": ...})`; the CLI
                            flags (`--<flag>`) are generated from these fields (`method_options`)
    active_parameters       FFN weights it multiplies per generated token (figure 6, tables)
    calibration_needs       what it reads from a calibration set (empty: none)
    merged(path)            how a low-rank path x L R merges into it (default None: not mergeable,
                            the path runs beside FF̂ and merged inference equals unmerged)
    with_lora(lora)         the eq-11 LoRA baseline inside it (default None: not defined)
    kept_neurons(state)     a per-sequence kept neuron set, if it has one (default None)
    takes_sparsity          False for a method with nothing to drop (dense)

A `Method` instance belongs to ONE layer. Per-layer constants (TEAL thresholds, calibrated CATS τ)
live on the instance (`setup`); per-sequence state (GRIFFIN's kept set, prompt-based CATS τ) is
what `prepare` returns from the prompt tokens of a prefill and what `efficient` / `decode` use.
The wrapper (`caprese.methods.wrapper.EfficientFFN`) decides which tokens get which output.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..arch.ffn import FFNBlock
from ..errors import CapreseError
from ..registry import Registry, check_range

CalibrationNeed = str
"""One of "gate_abs" (|σ(x W_g)|), "inputs" (signed x), "intermediate" (signed Z), "sample" (x rows)."""


@dataclass
class MethodConfig:
    """Options of a method beyond its sparsity; subclasses add fields with `metadata={"help": ...}`
    (optional metadata: "flag" (the CLI flag without --, default `<method>-<field>`), "choices",
    "metavar"). Subclasses put their checks in `validate()`, which `__post_init__` runs, so a
    config is checked wherever it is built (`build_config`, `dataclasses.replace`, a test)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line CapreseError on a bad option (the shared checkers of caprese.registry)."""


@dataclass(frozen=True)
class LayerShape:
    """The dimensions an active-parameter count needs: D, D_FF, and whether the FFN is gated."""

    hidden: int
    intermediate: int
    gated: bool

    @property
    def inputs(self) -> int:
        """n_in: input projections (gate and up, or up alone)."""
        return 2 if self.gated else 1

    @property
    def dense(self) -> int:
        """(n_in + 1)·D·D_FF: every FFN weight."""
        return (self.inputs + 1) * self.hidden * self.intermediate


class Method:
    """One layer's efficient FFN (the FF̂ that Caprese corrects)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    stateful: ClassVar[bool] = False
    """True when generated tokens need state prepared from the sequence's own prompt."""
    prepare_point: ClassVar[str | None] = None
    """The trace point ("z" or "gate_act") `prepare` reads, if any: the wrapper then captures it
    from the original FFN's own prefill forward and passes it as `features` (no second pass
    through W_g/W_1 per prefill)."""
    takes_sparsity: ClassVar[bool] = True
    """False for a method that drops nothing (dense): its sparsity is 0 and Caprese has nothing to correct."""

    def __init__(self, block: FFNBlock, sparsity: float, config: MethodConfig):
        self.block = block
        self.sparsity = float(sparsity)
        self.config = config

    # -- what the rest of caprese asks of a method, before any layer exists ------------------------
    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity: float, config: MethodConfig) -> float:
        """FFN weights multiplied per generated token in one layer (every method must define it)."""
        raise CapreseError(f"method {cls.name!r} defines no active_parameters")

    @classmethod
    def reselection_parameters(cls, shape: LayerShape, sparsity: float, config: MethodConfig) -> float:
        """Weights per generated token spent re-choosing what to keep, amortised (default 0)."""
        return 0.0

    @classmethod
    def reselection_cost(cls, shape: LayerShape, config: MethodConfig) -> float:
        """Weights one reselection multiplies (the meter counts reselections as they happen; default 0)."""
        return 0.0

    @classmethod
    def calibration_needs(cls, config: MethodConfig) -> set[CalibrationNeed]:
        """What this method reads from a calibration set (empty: no calibration)."""
        return set()

    @classmethod
    def defines(cls, hook: str) -> bool:
        """Whether this class overrides the optional hook `hook` ("merged", "with_lora", "kept_neurons")."""

        def function(obj):  # a classmethod looked up on a class is a new bound method each time
            return getattr(obj, "__func__", obj)

        return function(getattr(cls, hook)) is not function(getattr(Method, hook))

    # -- set-up, once per layer ------------------------------------------------------------------
    def setup(self, calibration: Any | None) -> None:
        """Per-layer constants from this layer's calibration statistics (when `calibration_needs`)."""

    # -- per sequence ----------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, prompt: torch.Tensor, features: torch.Tensor | None = None) -> Any:
        """Per-sequence state from the real prompt tokens (`prompt`: (B, S) bool) of a prefill.
        `features`: the value of `prepare_point` on x from the original FFN's forward, or None
        (compute it from the layout's parts)."""
        return None

    def efficient(self, x: torch.Tensor, state: Any, meter: SparsityMeter | None = None, count=None) -> torch.Tensor:
        """FF̂(x) for every token of x with the given state; `meter` counts the tokens in `count`."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor, generated: torch.Tensor, state: Any, meter: SparsityMeter | None = None):
        """FF̂(x) for a forward whose generated tokens are `generated`; may advance `state`
        (GRIFFIN reselection). Tokens that are not generated get FF̂ with the current state."""
        return self.efficient(x, state, meter, generated)

    # -- optional hooks --------------------------------------------------------------------------------
    def merged(self, path) -> Method | None:
        """This layer with the low-rank path `path` (L: D×r, R: r×D) folded into its own weights
        (docs/method.md eqs 9-10), or None: not mergeable, the path is added beside FF̂."""
        return None

    def with_lora(self, lora) -> Method | None:
        """This layer with the eq-11 LoRA baseline inside it, or None where the baseline is undefined."""
        return None

    def kept_neurons(self, state: Any) -> torch.Tensor | None:
        """The per-sequence kept neuron set, (B, k) sorted indices, for methods that keep one."""
        return None

    # -- reporting -------------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able per-layer facts (thresholds, kept counts) for results files."""
        return {}


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str, *, aliases: tuple[str, ...] = ()):
    """Class decorator: register a Method subclass under `name` (its CLI flags are checked here)."""

    def add(cls: type[Method]) -> type[Method]:
        if not cls.defines("active_parameters"):
            raise CapreseError(f"method {name!r} must define active_parameters (its FFN weights per generated token)")
        cls.name = name
        method_options(cls)  # a bad config field fails at import, not on first use
        return METHODS.register(name, cls, aliases=aliases)

    return add


# -- options: one CLI flag per config field ---------------------------------------------------------
@dataclass(frozen=True)
class MethodOption:
    """One field of a method's config as a command-line flag."""

    method: str
    field: str
    flag: str  # without the leading --
    kind: type
    default: Any
    help: str
    choices: tuple | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    def add_to(self, group) -> None:
        default = "never" if self.default is None else self.default
        text = f"{self.method}: {self.help} (default: {default})"
        if self.kind is bool:
            group.add_argument(
                f"--{self.flag}", dest=self.dest, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            group.add_argument(
                f"--{self.flag}",
                dest=self.dest,
                type=self.kind,
                choices=self.choices,
                default=None,
                metavar=self.metavar,
                help=text,
            )


def _field_kind(annotation: Any, where: str) -> type:
    """int, float, str or bool from a field's type (`X | None` and `Optional[X]` count as X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        annotation = args[0] if len(args) == 1 else None
    if annotation not in (int, float, str, bool):
        raise CapreseError(f"{where}: a method option must be int, float, str or bool (optionally | None)")
    return annotation


def method_options(cls: type[Method]) -> list[MethodOption]:
    """The CLI options of a method, generated from its config's fields and their metadata."""
    hints = typing.get_type_hints(cls.config_class)
    options = []
    for f in dataclasses.fields(cls.config_class):
        where = f"{cls.name} option {f.name!r}"
        if "help" not in f.metadata:
            raise CapreseError(f"{where} has no help (field(metadata={{'help': ...}}))")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = f.metadata.get("flag", f"{cls.name}-{f.name}".replace("_", "-"))
        options.append(
            MethodOption(
                cls.name,
                f.name,
                flag,
                _field_kind(hints[f.name], where),
                default,
                f.metadata["help"],
                f.metadata.get("choices"),
                f.metadata.get("metavar"),
            )
        )
    return options


# -- shared arithmetic ------------------------------------------------------------------------------
def kept_count(sparsity: float, width: int) -> int:
    """k = round((1 - sparsity) · width), halves rounding up (Python's round() would round to even)."""
    return int(math.floor((1.0 - sparsity) * width + 0.5 + 1e-9))


def check_sparsity(sparsity: Any) -> float:
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise CapreseError(f"sparsity {sparsity!r} is not a number (allowed: [0, 1))") from None
    check_range("sparsity", value, 0.0, 1.0, high_open=True)
    return value


def build_config(method: type[Method], options: dict[str, Any]) -> MethodConfig:
    """The method's dataclass config from keyword options; unknown names get a did-you-mean."""
    fields = {f.name for f in dataclasses.fields(method.config_class)}
    for key in options:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            allowed = ", ".join(sorted(fields)) or "none"
            raise CapreseError(f"method {method.name!r} has no option {key!r}{hint} (options: {allowed})")
    return method.config_class(**options)  # validated in __post_init__


# -- which layers ------------------------------------------------------------------------------------
def resolve_layers(layers: Any, num_layers: int) -> list[int]:
    """ "all", "first_half", a list of indices, or a comma-separated string of indices -> sorted indices."""
    if isinstance(layers, str):
        text = layers.strip().lower().replace("-", "_")
        if text == "all":
            return list(range(num_layers))
        if text in ("first_half", "firsthalf"):
            chosen = list(range(num_layers // 2))
            if not chosen:
                raise CapreseError(f"layers 'first_half' is empty for a model of {num_layers} layer(s)")
            return chosen
        try:
            layers = [int(part) for part in layers.split(",") if part.strip()]
        except ValueError:
            raise CapreseError(
                f"layers {layers!r} is not allowed (choose from: all, first_half, or comma-separated layer indices)"
            ) from None
    if isinstance(layers, int):
        layers = [layers]
    try:
        indices = [int(i) for i in layers]
    except (TypeError, ValueError):
        raise CapreseError(
            f"layers {layers!r} is not allowed (choose from: all, first_half, or a list of indices)"
        ) from None
    if any(float(i) != float(j) for i, j in zip(indices, layers)):
        raise CapreseError(f"layers {list(layers)!r} must be whole numbers")
    if not indices:
        raise CapreseError("layers [] is empty (choose from: all, first_half, or a list of indices)")
    bad = [i for i in indices if not 0 <= i < num_layers]
    if bad:
        raise CapreseError(f"layer {bad[0]} is out of range (the model has {num_layers} layers: 0..{num_layers - 1})")
    return sorted(set(indices))


# -- measured sparsity --------------------------------------------------------------------------------
class SparsityMeter:
    """Counts zeroed entries of the sparsified activations on the counted (generated) tokens.

    Each named activation has a weight (the parameters its zeros let a kernel skip), so TEAL's
    gate/up/down inputs combine into one effective sparsity. Counts stay on the device (no sync
    per forward).
    """

    def __init__(self):
        self.kept: dict[str, torch.Tensor] = {}
        self.total: dict[str, torch.Tensor] = {}
        self.weight: dict[str, float] = {}
        self.counted: dict[str, torch.Tensor] = {}  # tokens counted per activation
        self.events: dict[str, torch.Tensor] = {}  # e.g. GRIFFIN's reselections, per counted sequence

    def add(self, name: str, keep: torch.Tensor, count: torch.Tensor | None, weight: float = 1.0) -> None:
        """`keep`: (B, S or 1, N) bool of entries kept; `count`: (B, S) bool of tokens to count (None: all)."""
        width = keep.shape[-1]
        kept_per_token = keep.sum(dim=-1, dtype=torch.float64)  # (B, S) or (B, 1)
        if count is None:
            count = torch.ones(kept_per_token.shape, dtype=torch.bool, device=keep.device)
        kept_per_token = kept_per_token.expand(count.shape)
        kept = (kept_per_token * count).sum()
        tokens = count.sum(dtype=torch.float64)
        self.kept[name] = self.kept.get(name, 0) + kept
        self.total[name] = self.total.get(name, 0) + tokens * width
        self.counted[name] = self.counted.get(name, 0) + tokens
        self.weight[name] = weight

    def add_fixed(
        self, name: str, kept_per_token: int, width: int, shape, count: torch.Tensor | None, device, weight: float = 1.0
    ) -> None:
        """`add` for a method that keeps exactly `kept_per_token` of `width` entries of every token
        of `shape` (B, S) (oracle top-k): the same counts without a pass over a mask."""
        tokens = (
            count.sum(dtype=torch.float64)
            if count is not None
            else torch.tensor(float(math.prod(shape)), dtype=torch.float64, device=device)
        )
        self.kept[name] = self.kept.get(name, 0) + tokens * kept_per_token
        self.total[name] = self.total.get(name, 0) + tokens * width
        self.counted[name] = self.counted.get(name, 0) + tokens
        self.weight[name] = weight

    def add_events(self, name: str, n: torch.Tensor | int) -> None:
        """Count `n` occurrences of an event (a reselection) on counted tokens."""
        self.events[name] = self.events.get(name, 0) + n

    def reset(self) -> None:
        for counts in (self.kept, self.total, self.weight, self.counted, self.events):
            counts.clear()

    def counted_tokens(self) -> float:
        """Generated tokens counted (each activation sees the same ones; 0 before any)."""
        return max((float(t) for t in self.counted.values()), default=0.0)

    def events_per_token(self, name: str) -> float | None:
        """Occurrences of event `name` per counted token; None before any counted token."""
        tokens = self.counted_tokens()
        return float(self.events.get(name, 0)) / tokens if tokens else None

    def by_name(self) -> dict[str, float]:
        return {
            name: 1.0 - float(self.kept[name]) / float(self.total[name])
            for name in self.kept
            if float(self.total[name])
        }

    def tokens(self) -> float:
        return max((float(t) for t in self.total.values()), default=0.0)

    def overall(self) -> float | None:
        """Weighted mean of the named sparsities (weights: parameters each activation's zeros skip);
        None before any counted token."""
        sparsities = self.by_name()
        if not sparsities:
            return None
        return sum(self.weight[n] * s for n, s in sparsities.items()) / sum(self.weight[n] for n in sparsities)

    def total_weight(self) -> float:
        return sum(self.weight[n] for n in self.by_name())
