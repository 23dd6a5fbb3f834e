"""Task ``readmission``'s keys, at the top of ``generate_data`` and ``model``.

They sit beside the shared keys rather than under ``<section>.readmission`` because
readmission was the first task and users' params.yaml files write them there.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from privfed.config.sections import Section, TaskSettings

__all__ = ["SETTINGS", "ReadmissionDataSettings", "ReadmissionModelSettings"]


class ReadmissionDataSettings(Section):
    """The synthetic longitudinal cohorts (with the shared ``patients_per_hospital``)."""

    min_months: int = Field(6, ge=1, le=24)
    max_months: int = Field(12, ge=1, le=24)
    n_genes: int = Field(64, ge=10, le=200)
    label_noise: float = Field(0.35, ge=0.0)

    @model_validator(mode="after")
    def _months_ordered(self) -> ReadmissionDataSettings:
        if self.min_months > self.max_months:
            raise ValueError(
                f"min_months={self.min_months} is larger than max_months={self.max_months}"
            )
        return self


class ReadmissionModelSettings(Section):
    """The multimodal network's windows, its public pretraining and its DP-SGD defaults."""

    seq_days: int = Field(60, ge=7)
    seq_weeks: int = Field(12, ge=2)
    public_patients: int = Field(2000, ge=50, le=1_000_000, description="public registry size")
    public_epochs: int = Field(12, ge=1, le=500, description="public pretraining epochs")
    dp_batch_size: int = Field(192, ge=1, description="readmission: DP-SGD expected batch")
    dp_lr: float = Field(0.02, gt=0.0, description="readmission: DP-SGD step size")
    dp_max_grad_norm: float = Field(3.0, gt=0.0, description="readmission: DP clipping bound")


SETTINGS = TaskSettings(
    flat={"generate_data": ReadmissionDataSettings, "model": ReadmissionModelSettings}
)
