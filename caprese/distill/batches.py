"""Prompt/response pairs as teacher-forced batches: left-padded ids plus per-sequence prompt lengths.

Teacher forcing needs, for each sequence, where its prompt ends in the padded input's own
coordinates (what `PhaseTracker.teacher_forced` takes). Responses are tokenized apart from their
prompts, as generation produced them, so position t is a generated token exactly when it was one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import CapreseError
from ..methods.forcing import position_ids


@dataclass
class TokenizedPair:
    prompt: list[int]
    response: list[int]


@dataclass
class TeacherForcedBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lengths: torch.Tensor
    """Per sequence: index of its first response token in the padded input (= pads + prompt length)."""

    def to(self, device) -> TeacherForcedBatch:
        return TeacherForcedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.prompt_lengths)))

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counting real tokens only (cumsum of the mask − 1, clamped at 0), as `generate`
        computes them: left padding does not shift a sequence (absolute or scaled-position models)."""
        return position_ids(self.attention_mask)

    def model_inputs(self) -> dict:
        """The keyword arguments of a training forward: ids, mask and the positions generate would use."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    @property
    def generated_mask(self) -> torch.Tensor:
        """(B, S) bool: response tokens (the positions the efficient FFN runs on)."""
        positions = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (positions[None, :] >= self.prompt_lengths[:, None]) & self.attention_mask.bool()

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def tokenize_pairs(tokenizer, rows: Iterable[dict], *, max_response_tokens: int | None = None) -> list[TokenizedPair]:
    """rows with 'prompt' and 'response' text -> token ids; the response ends with EOS."""
    pairs = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "response" not in row:
            raise CapreseError(f"distillation row {i} needs 'prompt' and 'response' fields, got {sorted(row)}")
        # as generation tokenizes prompts: chat templates carry their own BOS
        add_special = not getattr(tokenizer, "chat_template", None)
        prompt = tokenizer(row["prompt"], add_special_tokens=add_special)["input_ids"]
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        if max_response_tokens is not None:
            response = response[:max_response_tokens]
        if tokenizer.eos_token_id is not None and (not response or response[-1] != tokenizer.eos_token_id):
            response = response + [tokenizer.eos_token_id]
        pairs.append(TokenizedPair(prompt=list(prompt), response=list(response)))
    return pairs


def collate(pairs: Sequence[TokenizedPair], pad_token_id: int) -> TeacherForcedBatch:
    """Left-pad prompt+response sequences into one teacher-forced batch."""
    if not pairs:
        raise CapreseError("cannot collate an empty batch of distillation samples")
    lengths = [len(p.prompt) + len(p.response) for p in pairs]
    width = max(lengths)
    ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    prompt_lengths = torch.empty(len(pairs), dtype=torch.long)
    for b, (pair, length) in enumerate(zip(pairs, lengths)):
        pad = width - length
        ids[b, pad:] = torch.tensor(pair.prompt + pair.response)
        mask[b, pad:] = 1
        prompt_lengths[b] = pad + len(pair.prompt)
    return TeacherForcedBatch(ids, mask, prompt_lengths)


def iterate_batches(
    pairs: Sequence[TokenizedPair], batch_size: int, pad_token_id: int, *, seed: int | None = None
) -> Iterator[TeacherForcedBatch]:
    """Batches in a seeded random order (or in order when seed is None)."""
    order = list(range(len(pairs)))
    if seed is not None:
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    for start in range(0, len(order), batch_size):
        yield collate([pairs[i] for i in order[start : start + batch_size]], pad_token_id)


def rows_hash(rows: Iterable[dict]) -> str:
    """sha256 of the prompt/response texts, recorded with every adapter trained on them."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["prompt"], row["response"]]).encode())
    return digest.hexdigest()
