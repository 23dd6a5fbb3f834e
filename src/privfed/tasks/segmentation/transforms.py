"""MONAI dictionary transforms from a case folder to the tensors the UNet trains on.

Every case, from any hospital or a real BraTS release, goes through the same chain: load the
four modalities as channels, reorient to RAS, resample to one voxel size, crop to the head,
pad or crop to a fixed grid, and z-score each modality over its non-zero voxels (so a
scanner's gain drops out). Training splits add random crops, flips and intensity jitter.

The label stays one channel of class indices 0-3 (mutually exclusive, as stored); the loss
one-hot encodes it and the metrics derive the overlapping BraTS regions from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from privfed.io import DataError
from privfed.tasks.segmentation.layout import LABEL, MODALITIES, find_case_file

if TYPE_CHECKING:
    from monai.transforms import Compose

    from privfed.tasks.segmentation.settings import SegmentationModelSection

__all__ = ["CaseDataset", "case_record", "eval_transforms", "train_transforms"]


def case_record(case_dir: Path) -> dict[str, Any]:
    """MONAI's input dict for one case: the four modality paths and the label path."""
    case_dir = Path(case_dir)
    paths = {k: find_case_file(case_dir, k) for k in (*MODALITIES, LABEL)}
    missing = [k for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"case {case_dir.name!r} ({case_dir}) lacks {missing}")
    return {
        "image": [str(paths[m]) for m in MODALITIES],
        "label": str(paths[LABEL]),
        "case_id": case_dir.name,
    }


def _deterministic(m: SegmentationModelSection) -> list[Any]:
    from monai.transforms import (
        CropForegroundd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ResizeWithPadOrCropd,
        Spacingd,
    )

    keys = ["image", "label"]
    return [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        EnsureTyped(keys="image", dtype=torch.float32),
        # explicit labels: NIfTI world space is RAS (MONAI 1.6 warns that its default changes)
        Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=keys, pixdim=(m.spacing_mm,) * 3, mode=("bilinear", "nearest")),
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
        ResizeWithPadOrCropd(keys=keys, spatial_size=(m.grid,) * 3),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        EnsureTyped(keys="label", dtype=torch.int64),
    ]


def eval_transforms(m: SegmentationModelSection) -> Compose:
    from monai.transforms import Compose

    return Compose(_deterministic(m))


def train_transforms(m: SegmentationModelSection) -> Compose:
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
    )

    keys = ["image", "label"]
    random: list[Any] = [RandSpatialCropd(keys=keys, roi_size=(m.roi_size,) * 3, random_size=False)]
    if m.augment:
        random += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ]
    return Compose(_deterministic(m) + random)


class CaseDataset(Dataset):
    """``(image [4, D, H, W] float32, label [1, D, H, W] int64)`` per case, as plain tensors.

    Tuples, not MONAI's dicts, because the training loop, Opacus' Poisson loader and the
    membership audit treat a batch as a sequence of tensors. The deterministic part of the
    chain runs once per case and is cached in memory (MONAI's ``CacheDataset``); random
    transforms run on every access and draw from ``torch``'s RNG via MONAI's seeded state.
    """

    def __init__(
        self,
        case_dirs: Sequence[Path],
        m: SegmentationModelSection,
        *,
        train: bool,
        seed: int = 0,
    ) -> None:
        from monai.data import CacheDataset

        self.case_dirs = [Path(c) for c in case_dirs]
        self.case_ids = [c.name for c in self.case_dirs]
        #: The preprocessing/inference settings (evaluation reads roi_size, spacing_mm).
        self.settings = m
        transform = train_transforms(m) if train else eval_transforms(m)
        if train:
            transform.set_random_state(seed=seed)
        self._data = CacheDataset(
            [case_record(c) for c in self.case_dirs],
            transform=transform,
            cache_rate=1.0,
            num_workers=0,
            progress=False,
        )
        self.train = train

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self._data[index]
        image, label = item["image"], item["label"]
        as_tensor = getattr(image, "as_tensor", None)
        image = as_tensor() if as_tensor is not None else torch.as_tensor(image)
        as_tensor = getattr(label, "as_tensor", None)
        label = as_tensor() if as_tensor is not None else torch.as_tensor(label)
        return image.float().contiguous(), label.long().contiguous()
