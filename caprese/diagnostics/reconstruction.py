"""Per-layer reconstruction error of FFN approximations, with and without the best rank-r correction.

The paper's figure 2 asks: how far is FF̂(x) (oracle top-k at density d) from FF(x), and how much
of that residual FF(x) − FF̂(x) can a rank-r linear map of x remove? `ResidualStudy` answers it for
any set of approximations measured on the same tokens:

1. fit split: stream (x, FF(x) − FF̂(x)) into a `RegressionAccumulator` per layer (one XᵀX, one
   XᵀY per approximation), then `fit()` the reduced-rank regression for every rank;
2. eval split: measure FF̂ (rank 0) and FF̂ + x L R (each rank) against FF with `ErrorMeter`.

Fit and eval use different sequences (see `split_of`): a correction measured on the tokens it was
fitted on would flatter it, most of all at large r or few tokens.

How an approximation reaches the study is up to the caller: `OracleTopKProbe` computes oracle
top-k from traced (x, Z, FF(x)) on generated tokens; `teacher_callback` adapts the efficient-FFN
methods' teacher mode (`apply_method(..., teacher_callback=...)`), which hands over
(layer, x, FF(x) − FF̂(x), FF̂(x)) for any method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from ..errors import CapreseError
from ..lowrank import DEFAULT_RIDGE, RegressionAccumulator
from ..methods.topk import topk_mask  # oracle top-k: the equation lives with the methods, once
from ..stats.topk import check_densities, keep_count
from .error import ErrorMeter

SPLITS = ("fit", "eval")


def split_of(sample_index: int) -> str:
    """Whole sequences alternate between the splits: even samples fit, odd samples evaluate.

    Sequence-level, because tokens of one sequence are strongly correlated (a token-level split
    would test on near-copies of the training tokens); alternating rather than first/second half,
    because task files are often ordered (difficulty levels, sources).
    """
    return SPLITS[sample_index % 2]


def check_ranks(ranks: Iterable[int], hidden_size: int) -> tuple[int, ...]:
    out = []
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= hidden_size:
            raise CapreseError(f"rank {r!r} is out of range (allowed: integers 1..D={hidden_size})")
        if r not in out:
            out.append(r)
    return tuple(sorted(out))


def default_ranks(hidden_size: int) -> tuple[int, ...]:
    """D/32, D/16, D/8: the paper's r = 128/256/512 relative to D = 4096."""
    return tuple(sorted({max(1, hidden_size // 32), max(1, hidden_size // 16), max(1, hidden_size // 8)}))


class ResidualStudy:
    """Errors of a fixed set of approximations ("labels") per layer, rank 0 and each rank r."""

    def __init__(
        self,
        hidden_size: int,
        layers: Iterable[int],
        labels: Mapping[str, dict] | Sequence[str],
        ranks: Iterable[int] = (),
        *,
        ridge: float = DEFAULT_RIDGE,
        device: str | torch.device = "cpu",
    ):
        self.hidden_size = int(hidden_size)
        self.layers = tuple(sorted(int(layer) for layer in layers))
        self.labels: dict[str, dict] = dict(labels) if isinstance(labels, Mapping) else {str(n): {} for n in labels}
        if not self.labels:
            raise CapreseError("a residual study needs at least one approximation label")
        self.ranks = check_ranks(ranks, self.hidden_size)
        self.ridge = float(ridge)
        self.fits = (
            {
                layer: RegressionAccumulator(self.hidden_size, self.hidden_size, len(self.labels), device=device)
                for layer in self.layers
            }
            if self.ranks
            else {}
        )
        self.meters = {
            (layer, label, rank): ErrorMeter()
            for layer in self.layers
            for label in self.labels
            for rank in (0,) + self.ranks
        }
        self.factors: dict[tuple[int, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.split = "fit" if self.ranks else "eval"
        self._fitted_by = self  # the study whose fit split produced `factors`

    def measurer(self) -> ResidualStudy:
        """A study of the same layers, labels and ranks that scores *this* study's corrections on
        other tokens (e.g. prompt tokens): no fit moments of its own (no D x D memory), only
        error meters; it shares `factors`, so it can observe once `fit()` has run here."""
        other = ResidualStudy(self.hidden_size, self.layers, self.labels, (), ridge=self.ridge)
        other.ranks = self.ranks
        other.meters = {key: ErrorMeter() for key in self.meters}
        other.factors = self.factors  # the same dict: filled by self.fit()
        other._fitted_by = self
        return other

    # -- streaming -----------------------------------------------------------------------------
    def set_split(self, split: str) -> None:
        if split not in SPLITS:
            raise CapreseError(f"split {split!r} is unknown (choose from: {', '.join(SPLITS)})")
        if split == "eval" and self.ranks and not self.factors:
            raise CapreseError("call fit() after the fit split and before the eval split")
        self.split = split

    def observe(
        self, layer: int, x: torch.Tensor, reference: torch.Tensor, approximations: Mapping[str, torch.Tensor]
    ) -> None:
        """(N, D) FFN inputs, FF(x) and every label's FF̂(x) on the same N tokens."""
        if layer not in self.layers:
            raise CapreseError(f"layer {layer} is not part of this study (layers: {list(self.layers)})")
        if set(approximations) != set(self.labels):
            raise CapreseError(
                f"approximations {sorted(approximations)} do not match the study's labels {sorted(self.labels)}"
            )
        if x.shape[0] == 0:
            return
        if self.ranks and not self.fits and not self.factors:
            raise CapreseError("this study measures another study's corrections: fit that one first")
        if self.split == "fit":
            if self.ranks:
                residuals = torch.stack([reference - approximations[label] for label in self.labels])
                self.fits[layer].update(x, residuals)
            return
        for label in self.labels:
            approx = approximations[label]
            self.meters[(layer, label, 0)].update(reference, approx)
            factors = self.factors.get((layer, label), {})
            for rank in self.ranks:
                L, R = factors[rank]
                correction = (x.to(L.dtype) @ L.to(x.device)) @ R.to(x.device)
                self.meters[(layer, label, rank)].update(reference, approx + correction.to(approx.dtype))

    def observe_residuals(
        self, layer: int, x: torch.Tensor, reference: torch.Tensor, residuals: Mapping[str, torch.Tensor]
    ) -> None:
        """Same as `observe`, given FF(x) − FF̂(x) per label instead of FF̂(x)."""
        self.observe(layer, x, reference, {label: reference - r for label, r in residuals.items()})

    def fit(self) -> None:
        """Fit every (layer, label) correction for every rank from the fit split."""
        for layer, acc in self.fits.items():
            if int(acc.count) == 0:
                raise CapreseError(f"layer {layer}: the fit split held no generated tokens (more --samples?)")
            for t, label in enumerate(self.labels):
                self.factors[(layer, label)] = acc.fit_ranks(list(self.ranks), t, ridge=self.ridge)

    # -- results -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per (layer, label, rank) with the eval-split errors."""
        rows = []
        for (layer, label, rank), meter in self.meters.items():
            fits = self._fitted_by.fits
            fit_tokens = int(fits[layer].count) if fits else 0
            rows.append(
                {
                    "layer": layer,
                    "label": label,
                    **self.labels[label],
                    "rank": rank,
                    **meter.result(),
                    "fit_tokens": fit_tokens,
                }
            )
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "ranks": list(self.ranks),
            "layers": list(self.layers),
            "ridge": self.ridge,
            "fits": {layer: acc.state_dict() for layer, acc in self.fits.items()},
            "meters": {f"{layer}|{label}|{rank}": m.state_dict() for (layer, label, rank), m in self.meters.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (
            list(state["ranks"]) != list(self.ranks)
            or list(state["layers"]) != list(self.layers)
            or list(state["labels"]) != list(self.labels)
        ):
            raise CapreseError("study state has other layers, labels or ranks than this study")
        for layer, acc in self.fits.items():
            acc.load_state_dict(state["fits"][layer])
        for (layer, label, rank), meter in self.meters.items():
            meter.load_state_dict(state["meters"][f"{layer}|{label}|{rank}"])

    def merge(self, other: ResidualStudy) -> ResidualStudy:
        """Add another study's fit moments and eval errors (same layers, labels and ranks); refit afterwards."""
        if (other.layers, list(other.labels), other.ranks) != (self.layers, list(self.labels), self.ranks):
            raise CapreseError("cannot merge studies with different layers, labels or ranks")
        for layer, acc in self.fits.items():
            acc.merge(other.fits[layer])
        for key, meter in self.meters.items():
            meter.merge(other.meters[key])
        return self


def oracle_labels(densities: Iterable[float]) -> dict[str, dict]:
    """Labels for oracle top-k at each density: {"topk@0.1": {"method": "oracle_topk", "density": 0.1}}."""
    return {f"topk@{d:g}": {"method": "oracle_topk", "density": d} for d in check_densities(densities)}


class OracleTopKProbe:
    """Trace callbacks feeding a `ResidualStudy` with oracle top-k FF̂ on generated tokens, and
    optionally a second study (`study.measurer()`) with the same FF̂ on the prompt tokens of the
    eval split, scored with the corrections fitted on generated tokens.

    Needs the points ffn_in, z and ffn_out of the study's layers; per forward and layer, x and Z
    are held until FF(x) arrives, then dropped (memory: one forward's activations of one layer).
    """

    points = ("ffn_in", "z", "ffn_out")

    def __init__(
        self, study: ResidualStudy, blocks, densities: Iterable[float], *, prompt_study: ResidualStudy | None = None
    ):
        self.study = study
        self.prompt_study = prompt_study
        self.blocks = blocks
        self.labels = oracle_labels(densities)
        if set(self.labels) != set(study.labels):
            raise CapreseError(f"the study's labels {sorted(study.labels)} are not oracle top-k at these densities")
        self._x: dict[int, torch.Tensor] = {}
        self._z: dict[int, torch.Tensor] = {}

    def callbacks(self, tracker) -> dict:
        def on_x(layer: int, x: torch.Tensor) -> None:
            self._x[layer] = x

        def on_z(layer: int, z: torch.Tensor) -> None:
            self._z[layer] = z

        def on_out(layer: int, out: torch.Tensor) -> None:
            x, z = self._x.pop(layer, None), self._z.pop(layer, None)
            if x is None or z is None:
                raise CapreseError(
                    f"layer {layer}: FFN output arrived without its input and Z (is a method wrapper slicing W_2?)"
                )
            phase = tracker.phase()
            if self.prompt_study is not None and self.study.split == "eval":
                prompt = phase.prompt_valid
                if bool(prompt.any()):
                    self.prompt_study.observe(layer, x[prompt], out[prompt], self.approximations(layer, z[prompt]))
            generated = phase.generated
            if not bool(generated.any()):
                return
            x, z, reference = x[generated], z[generated], out[generated]
            self.study.observe(layer, x, reference, self.approximations(layer, z))

        return {"ffn_in": on_x, "z": on_z, "ffn_out": on_out}

    def approximations(self, layer: int, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """FF̂(x) = top-k(Z) W_2 for every density (N, D)."""
        block = self.blocks[layer]
        out = {}
        for label, meta in self.labels.items():
            k = keep_count(meta["density"], z.shape[-1])
            out[label] = block.output(z * topk_mask(z, k))
        return out


def teacher_callback(study: ResidualStudy, label: str):
    """Adapter for `apply_method(..., teacher_callback=...)`: the method's FF̂ becomes `label` in `study`.

    The methods' teacher mode reports (layer, x, FF(x) − FF̂(x), FF̂(x)) on generated tokens while
    the model itself runs dense, so any efficient FFN is measured exactly like oracle top-k.
    """
    if set(study.labels) != {label}:
        raise CapreseError(f"a method's teacher callback feeds one label; the study has {sorted(study.labels)}")

    def callback(layer: int, x: torch.Tensor, residual: torch.Tensor, efficient: torch.Tensor) -> None:
        if layer in study.layers:
            study.observe(layer, x, residual + efficient, {label: efficient})

    return callback
