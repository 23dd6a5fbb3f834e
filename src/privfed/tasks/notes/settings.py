"""Task ``notes``'s keys: ``generate_data.notes`` and ``model.notes``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from privfed.config.sections import Section, TaskSettings

__all__ = ["SETTINGS", "NotesDataSection", "NotesModelSection"]


class NotesDataSection(Section):
    """Synthetic clinical notes of task ``notes`` (see :mod:`privfed.tasks.notes`)."""

    notes_per_hospital: int = Field(400, ge=10, le=1_000_000)
    min_words: int = Field(20, ge=1, description="validation: shorter notes fail")
    max_words: int = Field(600, ge=2, description="validation: longer notes fail")

    @model_validator(mode="after")
    def _words_ordered(self) -> NotesDataSection:
        if self.min_words >= self.max_words:
            raise ValueError(f"min_words={self.min_words} must be below max_words={self.max_words}")
        return self


class NotesModelSection(Section):
    """GPT-2 of task ``notes``, its byte-level BPE tokenizer, and how hospitals fine-tune it.

    Without ``checkpoint``, the tokenizer and the frozen base come from the public corpus
    (shared by every hospital, never a hospital's notes): ``vocab_size`` BPE tokens, and a GPT-2
    of ``n_layer`` x ``n_embd`` pretrained on it for ``pretrain_epochs``. ``mode: full`` trains
    and sends every weight; ``lora`` trains and sends only LoRA adapters (rank ``lora_rank``)
    on the attention projections, the base staying identical at every hospital.
    """

    mode: Literal["full", "lora"] = "lora"
    checkpoint: str | None = Field(
        None, description="local folder with a GPT-2 (config.json, weights, tokenizer.json)"
    )
    vocab_size: int = Field(2000, ge=300, le=65536)
    public_notes: int = Field(2000, ge=50, description="public corpus size (notes)")
    n_layer: int = Field(2, ge=1, le=48)
    n_embd: int = Field(96, ge=16, le=4096)
    n_head: int = Field(4, ge=1, le=64)
    max_length: int = Field(192, ge=16, le=2048, description="tokens per training window")
    pretrain_epochs: int = Field(6, ge=0, le=100)
    pretrain_lr: float = Field(3e-3, gt=0.0)
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: float = Field(8.0, gt=0.0)
    lora_freeze_a: bool = Field(
        False, description="FFA-LoRA: A stays at its shared init; only B trains and travels"
    )
    lr: float = Field(1e-4, gt=0.0, description="full: fine-tuning step (replaces train.lr)")
    lora_lr: float = Field(3e-3, gt=0.0, description="lora: the adapters' step (replaces train.lr)")
    batch_size: int = Field(16, ge=1, le=1024, description="notes per step (not train.batch_size)")
    dp_batch_size: int = Field(128, ge=1, le=4096, description="DP-SGD notes per step")
    dp_lr: float = Field(0.01, gt=0.0, description="DP-SGD step size (either mode)")
    dp_max_grad_norm: float = Field(0.05, gt=0.0, description="DP-SGD clipping bound")
    prefix_tokens: int = Field(32, ge=4, description="eval: prompt tokens")
    continuation_tokens: int = Field(32, ge=4, description="eval: tokens generated")
    generation_notes: int = Field(48, ge=1, description="eval: notes per split for BLEU/ROUGE-L")

    @model_validator(mode="after")
    def _heads_divide(self) -> NotesModelSection:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if self.prefix_tokens + self.continuation_tokens > self.max_length:
            raise ValueError(
                f"prefix_tokens + continuation_tokens = "
                f"{self.prefix_tokens + self.continuation_tokens} exceeds "
                f"max_length={self.max_length}"
            )
        return self


SETTINGS = TaskSettings(nested={"generate_data": NotesDataSection, "model": NotesModelSection})
