"""Task ``retina``'s keys: ``generate_data.retina`` and ``model.retina``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from privfed.config.sections import Section, TaskSettings

__all__ = ["AUGMENTATIONS", "SETTINGS", "RetinaDataSection", "RetinaModelSection"]

#: DiffAugment transforms ``model.retina.augment`` may name (``augment.POLICIES`` implements
#: them); named here so that validating a config imports no torch code.
AUGMENTATIONS = ("translation", "cutout", "color")


class RetinaDataSection(Section):
    """Synthetic fundus photographs of task ``retina`` (see :mod:`privfed.tasks.retina.generate`).

    Each hospital's camera stores images at its own resolution, ``image_size`` times a factor
    of 1 to 2; preprocessing bins every image down to ``model.retina.image_size``.
    """

    images_per_hospital: int = Field(300, ge=10, le=100_000)
    image_size: int = Field(64, ge=16, le=1024, description="side of the lowest-resolution camera")


class RetinaModelSection(Section):
    """The DCGAN, the shared preprocessing and the offline evaluator of task ``retina``."""

    image_size: int = Field(64, description="model grid: 32, 64 or 128 pixels per side")
    latent_dim: int = Field(64, ge=2, le=1024)
    g_channels: int = Field(32, ge=4, le=512, description="generator width at the last block")
    d_channels: int = Field(32, ge=4, le=512, description="discriminator width at the first block")
    conditional: bool = Field(True, description="generator and discriminator see the DR grade")
    noise_gain: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="generator: a per-pixel N(0, 1) noise map after every GroupNorm, times "
        "learned per-channel gains starting at this value (StyleGAN); 0 = none",
    )
    grade_norm: bool = Field(
        False,
        description="generator: GroupNorm gains and biases per DR grade (conditional "
        "normalization, BigGAN); needs conditional",
    )
    clahe: bool = Field(True, description="CLAHE contrast enhancement in preprocessing")
    clahe_clip: float = Field(0.01, gt=0.0, le=1.0, description="CLAHE clip limit (share)")
    clahe_tiles: int = Field(4, ge=1, le=32, description="CLAHE tiles per side")
    gamma: float = Field(1.0, gt=0.0, le=5.0, description="gamma correction after CLAHE")
    batch_size: int = Field(32, ge=2, le=4096, description="images per step")
    lr: float = Field(2e-4, gt=0.0, description="discriminator step size (Adam, beta1 0.5)")
    g_lr: float = Field(2e-4, gt=0.0, description="generator step size (Adam, beta1 0.5)")
    ema_decay: float = Field(
        0.98,
        ge=0.0,
        lt=1.0,
        description="per-step decay of the generator's weight average that samples; 0 = none",
    )
    class_weight: float = Field(
        1.0,
        ge=0.0,
        description="auxiliary grade head (AC-GAN): its cross-entropy's weight; 0 = none",
    )
    fake_grades: Literal["uniform", "local"] = Field(
        "local",
        description="grades of the generated images in each fit step: uniform over 0-4, or "
        "(fits without DP) the hospital's own grade mix, so each grade is taught mostly where "
        "its real images are; a DP fit always draws uniform grades (the mix is private)",
    )
    diversity_weight: float = Field(
        0.0,
        ge=0.0,
        description="mode-seeking term (MSGAN) in the generator's loss; 0 = none",
    )
    augment: list[str] = Field(
        default_factory=list,
        description="DiffAugment transforms of every discriminator input (translation, "
        "cutout, color); empty = none",
    )
    baseline_epochs: int = Field(
        16, ge=1, le=10_000, description="centralized and local-only epochs"
    )
    public_images: int = Field(
        2000, ge=10, le=1_000_000, description="public CT slices the public GAN is pretrained on"
    )
    public_epochs: int = Field(4, ge=1, le=1000, description="public GAN pretraining epochs")
    dp_batch_size: int = Field(64, ge=2, le=4096, description="DP-SGD expected images per step")
    dp_lr: float = Field(2e-4, gt=0.0, description="DP-SGD discriminator step size")
    dp_max_grad_norm: float = Field(1.0, gt=0.0, description="DP-SGD per-image clipping bound")
    eval_samples: int = Field(
        200, ge=10, le=100_000, description="generated images per evaluation (at most)"
    )
    evaluator_epochs: int = Field(
        15,
        ge=1,
        le=1000,
        description="epochs of each small classifier the metrics train (feature, TSTR, realism)",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> RetinaModelSection:
        if self.image_size not in (32, 64, 128):
            raise ValueError(f"image_size={self.image_size} must be 32, 64 or 128")
        if self.grade_norm and not self.conditional:
            raise ValueError("grade_norm=true needs conditional=true (it looks gains up by grade)")
        unknown = [name for name in self.augment if name not in AUGMENTATIONS]
        if unknown:
            raise ValueError(
                f"augment={self.augment}: unknown {unknown} (known: {sorted(AUGMENTATIONS)})"
            )
        for key in ("g_channels", "d_channels"):
            if getattr(self, key) % 4:
                raise ValueError(
                    f"{key}={getattr(self, key)} must be a multiple of 4 (GroupNorm, 4 groups)"
                )
        return self


SETTINGS = TaskSettings(nested={"generate_data": RetinaDataSection, "model": RetinaModelSection})
