"""Task ``segmentation``'s keys: ``generate_data.segmentation`` and ``model.segmentation``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from privfed.config.sections import Section, TaskSettings

__all__ = ["SETTINGS", "SegmentationDataSection", "SegmentationModelSection"]


class SegmentationDataSection(Section):
    """Synthetic brain MRI of task ``segmentation`` (see :mod:`privfed.tasks.segmentation`).

    Every hospital images the same physical field of view, ``volume_size * spacing_mm`` mm per
    side; a hospital with a coarser scanner stores fewer, larger voxels.
    """

    cases_per_hospital: int = Field(24, ge=3, le=2000)
    volume_size: int = Field(48, ge=16, le=256, description="voxels per side at spacing_mm")
    spacing_mm: float = Field(4.0, gt=0.0, le=10.0, description="reference voxel edge (mm)")


class SegmentationModelSection(Section):
    """MONAI UNet and the preprocessing grid of task ``segmentation``.

    Volumes are resampled to ``spacing_mm``, cropped to the head and padded or cropped to
    ``grid`` voxels per side; training takes random ``roi_size`` crops and inference slides a
    ``roi_size`` window. Both sizes must be multiples of 2**(len(channels) - 1), the UNet's
    total downsampling.
    """

    channels: tuple[int, ...] = Field((16, 32, 64, 128), min_length=2, max_length=6)
    num_res_units: int = Field(1, ge=0, le=4)
    norm: Literal["instance", "group"] = "instance"
    spacing_mm: float = Field(4.0, gt=0.0, le=10.0)
    grid: int = Field(48, ge=8, le=512)
    roi_size: int = Field(48, ge=8, le=512)
    sw_overlap: float = Field(0.25, ge=0.0, lt=1.0)
    augment: bool = Field(True, description="random flips and intensity shifts on train splits")
    batch_size: int = Field(
        2, ge=1, le=64, description="volumes per training step (replaces train.batch_size)"
    )
    baseline_epochs: int = Field(
        16,
        ge=1,
        le=1000,
        description="centralized and local-only epochs (replaces train_centralized/train_local"
        ".epochs)",
    )

    public_cases: int = Field(
        96, ge=4, le=100_000, description="scans of the public archive the public model learns"
    )
    public_epochs: int = Field(
        16, ge=1, le=1000, description="public pretraining epochs (best public-val epoch kept)"
    )
    dp_batch_size: int = Field(8, ge=1, le=4096, description="DP-SGD expected volumes per step")
    dp_lr: float = Field(3e-3, gt=0.0, description="DP-SGD step size")
    dp_max_grad_norm: float = Field(1.0, gt=0.0, description="DP-SGD per-case clipping bound")
    dp_trainable: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="module names or patterns DP-SGD trains (privacy.trainable overrides); "
        "null: every parameter",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> SegmentationModelSection:
        step = 2 ** (len(self.channels) - 1)
        for key in ("grid", "roi_size"):
            value = getattr(self, key)
            if value % step:
                raise ValueError(
                    f"{key}={value} must be a multiple of {step} (2**(len(channels) - 1) for "
                    f"channels={list(self.channels)})"
                )
        if self.roi_size > self.grid:
            raise ValueError(f"roi_size={self.roi_size} is larger than grid={self.grid}")
        if self.norm == "group" and any(c % 4 for c in self.channels):
            raise ValueError(
                f"norm='group' uses 4 groups: channels must be multiples of 4, got "
                f"{list(self.channels)}"
            )
        return self


SETTINGS = TaskSettings(
    nested={"generate_data": SegmentationDataSection, "model": SegmentationModelSection}
)
