"""BraTS region metrics: Dice and 95th-percentile Hausdorff distance on TC, WT and ET.

The regions overlap and are unions of the stored classes: tumour core TC = {1, 3}, whole
tumour WT = {1, 2, 3}, enhancing tumour ET = {3}. Empty regions follow the BraTS challenge:
both empty scores Dice 1 and HD95 0; one empty scores Dice 0 and HD95 the volume's diagonal.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["REGIONS", "brats_regions", "region_scores"]

REGIONS: dict[str, tuple[int, ...]] = {"tc": (1, 3), "wt": (1, 2, 3), "et": (3,)}


def brats_regions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, 1, *spatial]`` class indices to ``[B, 3, *spatial]`` binary TC, WT, ET masks."""
    if labels.ndim < 3 or labels.shape[1] != 1:
        raise ValueError(
            f"labels must be [B, 1, ...] class indices, got shape {tuple(labels.shape)}"
        )
    return torch.cat(
        [torch.isin(labels, torch.tensor(v, device=labels.device)) for v in REGIONS.values()],
        dim=1,
    ).float()


def region_scores(
    pred: torch.Tensor, target: torch.Tensor, *, spacing_mm: float | Sequence[float] = 1.0
) -> dict[str, np.ndarray]:
    """Per-case Dice and HD95 (mm) for each region, from ``[B, 1, ...]`` class indices.

    Returns ``{"dice_tc": [B], ..., "hd95_et": [B]}``.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p, t = brats_regions(pred), brats_regions(target)
    dice = compute_dice(p, t, include_background=True, ignore_empty=False).cpu().numpy()
    spatial = p.shape[2:]
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (len(spatial),))
    diagonal = float(np.linalg.norm(np.asarray(spatial) * spacing))
    p_any = p.flatten(2).any(-1).cpu().numpy()
    t_any = t.flatten(2).any(-1).cpu().numpy()
    hd = np.zeros_like(dice)
    both = p_any & t_any
    if both.any():
        with warnings.catch_warnings():  # empty regions are scored below, not by MONAI
            warnings.filterwarnings("ignore", message=".* is all 0, this may result in nan/inf")
            warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
            hd_all = (
                compute_hausdorff_distance(
                    p, t, include_background=True, percentile=95, spacing=spacing.tolist()
                )
                .cpu()
                .numpy()
            )
        hd[both] = hd_all[both]
    hd[p_any ^ t_any] = diagonal
    out = {}
    for k, name in enumerate(REGIONS):
        out[f"dice_{name}"] = dice[:, k].astype(np.float64)
        out[f"hd95_{name}"] = hd[:, k].astype(np.float64)
    return out
