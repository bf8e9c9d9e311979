"""End-to-end distillation (docs/method.md eq 8): all low-rank paths train jointly so the efficient
model's final hidden state (before the LM head) matches the original model's on generated tokens.

Only L and R are trainable; every original weight is frozen and never handed to the optimizer.
The teacher is the same model with every position treated as prompt (so every FFN is the
original), computed per batch without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import E2EConfig
from ..errors import CapreseError
from ..methods.choice import MethodChoice
from .batches import TeacherForcedBatch, TokenizedPair, iterate_batches
from .layerwise import EarlyStopping
from .optim import adam_with_linear_schedule
from .path import LowRankPath
from .rollback import Rollback

__all__ = ["E2EConfig", "train_end_to_end", "e2e_loss", "final_hidden_state"]


def _checkpointing(model, enable: bool) -> None:
    """Activation checkpointing on or off (non-reentrant, so frozen inputs still pass gradients)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x naming
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


@dataclass
class E2EResult:
    epoch_losses: list[float] = field(default_factory=list)
    initial_loss: float | None = None
    validation_losses: list[float] = field(default_factory=list)
    """Eq-8 loss on the held-out rows after each epoch (empty without a validation split)."""
    initial_validation_loss: float | None = None
    stopped_epoch: int | None = None
    """The epoch whose factors were kept when early stopping ended training (1-based), else None."""


def final_hidden_state(model, batch: TeacherForcedBatch) -> torch.Tensor:
    """The last hidden state (after the final norm, before the LM head), (B, S, D)."""
    out = model(**batch.model_inputs(), output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


def e2e_loss(student: torch.Tensor, teacher: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Eq 8: mean squared error between final hidden states over generated tokens."""
    return (student - teacher.to(student.dtype))[generated].float().pow(2).mean()


def teacher_hidden_state(model, session, batch: TeacherForcedBatch) -> torch.Tensor:
    """The original model's output: every position counts as prompt, so every FFN runs in full."""
    every_position = torch.full_like(batch.prompt_lengths, batch.input_ids.shape[1])
    with torch.no_grad(), session.teacher_forced(every_position):
        return final_hidden_state(model, batch)


def validation_loss(model, session, pairs: Sequence[TokenizedPair], pad_token_id: int, batch_size: int) -> float:
    """Eq 8 over held-out pairs, token-weighted (every generated token counts once), no gradients."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in iterate_batches(pairs, batch_size, pad_token_id, seed=None):
            batch = batch.to(device)
            target = teacher_hidden_state(model, session, batch)
            with session.teacher_forced(batch.prompt_lengths):
                student = final_hidden_state(model, batch)
            n = int(batch.generated_mask.sum())
            total += e2e_loss(student, target, batch.generated_mask).item() * n
            tokens += n
    return total / max(tokens, 1)


def attach_corrections(session, corrections: dict[int, LowRankPath]) -> None:
    for layer, correction in corrections.items():
        session.set_correction(layer, correction)


def _check_masters(corrections: dict[int, torch.nn.Module]) -> None:
    """The trained factors must be float32 masters, whatever the model's dtype.

    Why: Adam's update lr·m/√v is ~1e-4 of a weight here; bf16 keeps 8 bits of mantissa, so most
    such updates round away and a bf16 optimizer silently stops learning. The forward casts the
    factors to the model's dtype (differentiably), like autocast; peft trains adapters the same way."""
    for layer, module in corrections.items():
        for name, p in module.named_parameters():
            if p.dtype != torch.float32:
                raise CapreseError(
                    f"layer {layer}: trainable {name} is {p.dtype}; end-to-end distillation trains "
                    "float32 master factors (build them with dtype=torch.float32)"
                )


def train_end_to_end(
    model,
    choice: MethodChoice,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    corrections: dict[int, torch.nn.Module],
    config: E2EConfig,
    *,
    tokenizer=None,
    progress: bool = True,
    attach: Callable | None = None,
    validation_pairs: Sequence[TokenizedPair] = (),
) -> E2EResult:
    """Train `corrections` (one module per layer) jointly on eq 8. `attach(session, corrections)`
    puts them into the applied method (default: the Caprese path beside the efficient FFN).
    With `validation_pairs`, eq 8 on them is measured before training and after every epoch;
    `config.patience` > 0 stops once it has not improved for that many epochs (best epoch kept)."""
    config.check()
    attach = attach or attach_corrections
    if not pairs:
        raise CapreseError("samples 0: end-to-end distillation needs at least one sample")
    device = next(model.parameters()).device
    _check_masters(corrections)
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for c in corrections.values() for p in c.parameters()]
    for p in params:
        p.requires_grad_(True)
    steps = math.ceil(len(pairs) / config.batch_size) * config.epochs
    optimizer, scheduler = adam_with_linear_schedule(params, config.lr, steps, config.warmup_fraction)
    was_checkpointing = getattr(model, "is_activation_checkpointing", False)
    if config.gradient_checkpointing:
        _checkpointing(model, True)
    result = E2EResult()
    rollback = Rollback(corrections)
    bar = tqdm(total=steps, desc="end-to-end distillation", disable=not progress, unit="step")
    try:
        with choice.apply(model, tokenizer) as session:
            attach(session, corrections)
            stopper = EarlyStopping(corrections, config.patience, "end-to-end")
            if validation_pairs:
                result.initial_validation_loss = validation_loss(
                    model, session, validation_pairs, pad_token_id, config.batch_size
                )
                stopper.start(result.initial_validation_loss)
            for epoch in range(config.epochs):
                total, count = 0.0, 0
                for batch in iterate_batches(pairs, config.batch_size, pad_token_id, seed=config.seed + epoch):
                    batch = batch.to(device)
                    target = teacher_hidden_state(model, session, batch)
                    with session.teacher_forced(batch.prompt_lengths):
                        loss = e2e_loss(final_hidden_state(model, batch), target, batch.generated_mask)
                    if not torch.isfinite(loss):
                        rollback.fail(f"end-to-end loss became {loss.item()} in epoch {epoch + 1}", config.lr, result)
                    if result.initial_loss is None:
                        result.initial_loss = loss.item()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total += loss.item() * len(batch)
                    count += len(batch)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4g}")
                result.epoch_losses.append(total / count)
                rollback.keep()
                if validation_pairs:
                    loss = validation_loss(model, session, validation_pairs, pad_token_id, config.batch_size)
                    if stopper.watch(epoch, loss, result, bar, total / count):
                        break
    finally:
        bar.close()
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
        for p in params:
            p.requires_grad_(True)
        if config.gradient_checkpointing and not was_checkpointing:
            _checkpointing(model, False)
    return result
