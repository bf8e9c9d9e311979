"""Which tokens of the current forward are prompt tokens and which are generated.

Efficient FFN methods run the full FFN on prompt tokens (prefill) and the approximation on
generated tokens; statistics are split the same way. A `PhaseTracker` watches the root model's
forward through a pre-hook (no patched forward) and exposes, for the forward in flight, a
`Phase`: boolean masks over (batch, tokens) for prompt tokens and for real (non-pad) tokens.

Two modes:
- generate (default): a forward whose KV cache is empty is a prefill, all its tokens are prompt
  tokens; a forward with a non-empty cache holds generated tokens. `model.generate` and a manual
  prefill + token-by-token decode both work this way.
- teacher-forced (`tracker.teacher_forced(prompt_lengths)`): one forward over prompt +
  continuation; position t of sequence b is a prompt token iff t < prompt_lengths[b], counted in
  the input's own (padded) coordinates. This equals prefill followed by incremental decode.

A sequence of a generated batch that has ended (its input token is a stop token, or it was fed one
before) keeps being fed pad tokens by `model.generate` until the whole batch ends; those forwards
are `ended`, not generated: nothing is measured on them (a sequence alone would have stopped), and
their output is never used. Stop tokens: the ids of the innermost `stop_tokens(...)` context
(`caprese.evaluate.generation` sets its own), else the model's `generation_config.eos_token_id`.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import CapreseError


@dataclass
class Phase:
    prompt: torch.Tensor
    """(B, S) bool: token is a prompt token (runs the full FFN)."""
    valid: torch.Tensor
    """(B, S) bool: token is real, not padding."""
    prefill: bool
    """True when this forward starts a new sequence (empty KV cache)."""
    ended: torch.Tensor | None = field(default=None)
    """(B, S) bool: decode input of a sequence that already produced its stop token (None: none)."""

    @property
    def generated(self) -> torch.Tensor:
        """(B, S) bool: real generated tokens of sequences still running (what methods act on and count)."""
        generated = self.valid & ~self.prompt
        return generated if self.ended is None else generated & ~self.ended

    @property
    def settled(self) -> torch.Tensor:
        """(B, S) bool: generated or ended, the tokens whose original FFN output is never needed."""
        generated = self.valid & ~self.prompt
        return generated if self.ended is None else generated | self.ended

    @property
    def any_generated(self) -> bool:
        return bool(self.generated.any())

    @property
    def prompt_valid(self) -> torch.Tensor:
        """(B, S) bool: real prompt tokens (what GRIFFIN selects from and CATS calibrates on)."""
        return self.valid & self.prompt


_STOP_TOKENS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("stop_tokens", default=None)


@contextlib.contextmanager
def stop_tokens(ids: Iterable[int]):
    """Within this context a tracked generation ends a sequence at any of these token ids."""
    token = _STOP_TOKENS.set(tuple(int(i) for i in ids))
    try:
        yield
    finally:
        _STOP_TOKENS.reset(token)


def _model_stop_tokens(model) -> tuple[int, ...]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        return ()
    return (int(ids),) if isinstance(ids, int) else tuple(int(i) for i in ids)


def _cache_length(cache) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:  # legacy tuples
        return int(cache[0][0].shape[-2])
    return 0


class PhaseTracker:
    """Tracks the phase of every forward of `model` while attached (use as a context manager)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._signature = inspect.signature(model.forward)
        self._handle = None
        self._prompt_lengths: torch.Tensor | None = None
        self.current: Phase | None = None
        self.forwards = 0
        self._ended: torch.Tensor | None = None  # (B,) bool: sequences of this generation that ended

    # -- lifetime ------------------------------------------------------------------------------
    def attach(self) -> PhaseTracker:
        if self._handle is None:
            self._handle = self.model.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.current = None

    def __enter__(self) -> PhaseTracker:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    @contextlib.contextmanager
    def teacher_forced(self, prompt_lengths):
        """Within this context each forward is teacher-forced with these per-sequence prompt lengths."""
        lengths = torch.as_tensor(prompt_lengths, dtype=torch.long).reshape(-1)
        if (lengths < 0).any():
            raise CapreseError(f"prompt_lengths must be >= 0, got {lengths.tolist()}")
        previous, self._prompt_lengths = self._prompt_lengths, lengths
        try:
            yield self
        finally:
            self._prompt_lengths = previous

    # -- the hook --------------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        bound.update(bound.pop("kwargs", {}) or {})
        tokens = bound.get("input_ids")
        if tokens is None:
            tokens = bound.get("inputs_embeds")
        if tokens is None:
            raise CapreseError("a tracked forward needs input_ids or inputs_embeds")
        batch, length = tokens.shape[0], tokens.shape[1]
        device = tokens.device
        mask = bound.get("attention_mask")
        valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        if mask is not None and mask.dim() == 2:
            valid = mask[:, -length:].to(device=device, dtype=torch.bool)
        cache = bound.get("cache", bound.get("past_key_values"))
        past = _cache_length(cache)
        if self._prompt_lengths is not None:
            lengths = self._prompt_lengths.to(device)
            if lengths.numel() != batch:
                raise CapreseError(f"prompt_lengths has {lengths.numel()} entries for a batch of {batch}")
            positions = torch.arange(past, past + length, device=device)
            prompt = positions[None, :] < lengths[:, None]
            ended = None
        else:
            prompt = torch.full((batch, length), past == 0, dtype=torch.bool, device=device)
            ended = self._track_ended(bound.get("input_ids"), past == 0)
        self.current = Phase(prompt=prompt, valid=valid, prefill=past == 0, ended=ended)
        self.forwards += 1
        return None

    def _track_ended(self, tokens: torch.Tensor | None, prefill: bool) -> torch.Tensor | None:
        """(B, S) ended mask of a generate-mode forward: from its first stop-token input on, per
        sequence, sticky until the next prefill (no device sync)."""
        if prefill or tokens is None:
            self._ended = None
            return None
        stops = _STOP_TOKENS.get()
        stops = _model_stop_tokens(self.model) if stops is None else stops
        if not stops:
            return None
        hit = torch.isin(tokens, torch.tensor(stops, dtype=tokens.dtype, device=tokens.device))
        ended = hit.cummax(dim=1).values
        if self._ended is not None and self._ended.shape[0] == tokens.shape[0]:
            ended = ended | self._ended[:, None]
        self._ended = ended[:, -1]
        return ended

    def phase(self) -> Phase:
        if self.current is None:
            raise CapreseError("no forward in flight: run the model inside the tracker's context")
        return self.current
