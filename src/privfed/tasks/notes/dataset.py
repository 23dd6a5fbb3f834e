"""Notes as token tensors, and the language-model loss of each note.

One note is one example (and one DP-SGD unit): its tokens, cut to ``max_length`` with the end
of text last, right-padded. Each example's loss is the mean over its own tokens, so a batch's
loss is a mean of per-example losses that do not depend on each other (what DP-SGD's per-sample
clipping needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["NotesDataset", "encode_notes", "pad_batch", "per_example_lm_loss", "token_losses"]


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (1 on real tokens)."""
    width = max((len(x) for x in ids), default=1) or 1
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def token_losses(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy per position ``[B, T-1]`` and which positions count."""
    target = input_ids[:, 1:]
    valid = mask[:, 1:].to(logits.dtype)
    losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        reduction="none",
    ).view_as(target)
    return losses * valid, valid


def per_example_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean next-token loss of each example over its own tokens, ``[B]``."""
    losses, valid = token_losses(logits, input_ids, mask)
    return losses.sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)


def encode_notes(
    tokenizer: Tokenizer, texts: Sequence[str], *, max_length: int, eos_id: int
) -> list[list[int]]:
    """Token ids of each note, cut to ``max_length - 1`` tokens, then the end-of-text token."""
    return [enc.ids[: max_length - 1] + [eos_id] for enc in tokenizer.encode_batch(list(texts))]


class NotesDataset(TensorDataset):
    """``(input_ids, attention_mask)`` per note, with the notes' ids and texts kept beside.

    The texts let evaluation cut prefixes and true continuations; the hospitals let it report
    per-hospital scores.
    """

    def __init__(
        self,
        ids: list[list[int]],
        *,
        pad_id: int,
        note_ids: Sequence[str],
        hospitals: Sequence[str],
        width: int,
    ) -> None:
        input_ids, mask = pad_batch(ids, pad_id)
        if input_ids.shape[1] < width:  # one width for every split: batches stack cleanly
            extra = width - input_ids.shape[1]
            input_ids = F.pad(input_ids, (0, extra), value=pad_id)
            mask = F.pad(mask, (0, extra), value=0)
        super().__init__(input_ids, mask)
        self.token_ids = ids
        self.note_ids = list(note_ids)
        self.hospitals = list(hospitals)
        self.pad_id = pad_id
