"""Task ``extraction``'s keys: ``generate_data.extraction`` and ``model.extraction``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from privfed.config.sections import Section, TaskSettings

__all__ = ["SETTINGS", "ExtractionDataSection", "ExtractionModelSection"]


class ExtractionDataSection(Section):
    """Annotated synthetic notes of task ``extraction`` (see :mod:`.generate`)."""

    notes_per_hospital: int = Field(300, ge=10, le=1_000_000, description="each training hospital")
    external_notes: int = Field(
        200, ge=0, le=1_000_000, description="external-validation cohort (never trains); 0: none"
    )
    new_site_notes: int = Field(
        150,
        ge=0,
        le=1_000_000,
        description="new site: model.extraction.adapt_notes label, rest test",
    )


class ExtractionModelSection(Section):
    """The BERT encoder (public, masked-LM pretrained), its heads and how hospitals train them.

    ``mode: lora`` trains and sends LoRA adapters (rank ``lora_rank`` on the encoder modules
    ``lora_targets`` names) and the two heads; ``full`` every weight.
    """

    mode: Literal["full", "lora"] = "lora"
    vocab_size: int = Field(2000, ge=100, le=65536, description="WordPiece tokens")
    public_notes: int = Field(2000, ge=20, description="public corpus notes (tokenizer, MLM)")
    hidden: int = Field(128, ge=16, le=4096)
    layers: int = Field(2, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    intermediate: int = Field(512, ge=16, le=16384)
    max_length: int = Field(160, ge=16, le=2048, description="tokens per note (longer are cut)")
    pretrain_epochs: int = Field(6, ge=0, le=100)
    pretrain_lr: float = Field(1e-3, gt=0.0)
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: float = Field(16.0, gt=0.0)
    lora_freeze_a: bool = Field(
        True, description="lora: FFA-LoRA, A stays at its seeded init; only B and heads travel"
    )
    lora_targets: list[str] = Field(
        default_factory=lambda: ["query", "value"], min_length=1, description="encoder modules"
    )
    lr: float = Field(5e-4, gt=0.0, description="full: fine-tuning step (replaces train.lr)")
    lora_lr: float = Field(1.2e-2, gt=0.0, description="lora: adapters' and heads' step")
    batch_size: int = Field(16, ge=1, le=1024, description="notes per step")
    baseline_epochs: int = Field(16, ge=1, le=10_000, description="centralized and local epochs")
    max_pairs: int = Field(48, ge=1, le=4096, description="candidate relation pairs per note")
    dp_batch_size: int = Field(64, ge=1, le=4096, description="DP-SGD notes per step")
    dp_lr: float = Field(0.01, gt=0.0, description="DP-SGD step size")
    dp_max_grad_norm: float = Field(1.0, gt=0.0, description="DP-SGD per-note clipping bound")
    adapt_notes: int = Field(40, ge=1, le=50, description="new site's labelled notes (<= 50)")
    adapt_epochs: int = Field(10, ge=1, le=1000, description="new-site fine-tuning epochs")
    report_notes: int = Field(3, ge=0, le=50, description="extracted notes shown in the report")

    @model_validator(mode="after")
    def _heads_divide(self) -> ExtractionModelSection:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be a multiple of heads={self.heads}")
        return self


#: ``train_federated.strategy: null`` runs FedAvgM for this task: server momentum on the mean
#: adapter update is what meets federated >= 0.95 x centralized on every seed measured, where
#: plain FedAvg does not (README "Task extraction", BENCHMARKS.md section 12).
SETTINGS = TaskSettings(
    nested={"generate_data": ExtractionDataSection, "model": ExtractionModelSection},
    strategy="fedavgm",
)
