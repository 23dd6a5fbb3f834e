"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of the discriminator's inputs.

A discriminator trained on a few hundred images memorizes them, and the generator then
collapses onto the few images it still accepts. Augmenting *every* image the discriminator
sees, real and generated, in the discriminator's steps and in the generator's (through which
gradients flow), keeps it from memorizing without teaching the generator the augmentations:
it never sees an unaugmented image to compare them with.

Each transform acts per image with its own random draw (torch's global generator, which the
fit seeds), so DP-SGD's per-image clipping still bounds each real image's influence.

- ``translation``: a shift of up to 1/8 of the side in each direction, whole pixels, the
  uncovered border filled with -1 (the black outside the field of view);
- ``cutout``: a square of half the side, at a random centre, set to 0 (mid grey);
- ``color``: brightness (+-0.5) and contrast (x 0.5 to 1.5) per image, in [-1, 1] units.

No flip: a discriminator that cannot see orientation would let the generator mirror the eye.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["POLICIES", "diff_augment"]


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = max(int(h * ratio), 1), max(int(w * ratio), 1)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    # source pixel of each output pixel, in a copy padded by one pixel of -1 on every side
    rows = (torch.arange(h, device=x.device)[None, :, None] - dy).clamp(-1, h) + 1
    cols = (torch.arange(w, device=x.device)[None, None, :] - dx).clamp(-1, w) + 1
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = max(int(h * ratio), 1), max(int(w * ratio), 1)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def _color(x: torch.Tensor) -> torch.Tensor:
    b = len(x)
    brightness = torch.rand(b, 1, 1, 1, device=x.device) - 0.5
    contrast = torch.rand(b, 1, 1, 1, device=x.device) + 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + brightness


POLICIES = {"translation": _translation, "cutout": _cutout, "color": _color}


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """``x`` through each named transform of ``policy`` in turn (empty: ``x`` itself)."""
    for name in policy:
        x = POLICIES[name](x)
    return x
