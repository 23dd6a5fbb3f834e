"""A small MLP for tables that carries its own standardization (Opacus-compatible: Linear only).

Means, standard deviations and category modes are buffers, so they travel with the weights,
are saved in every checkpoint, and a model built from a checkpoint scores new rows exactly as
it was trained, whichever hospital's (or the federation's) statistics it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TabularMLP"]


class TabularMLP(nn.Module):
    def __init__(
        self,
        *,
        n_numeric: int,
        category_sizes: Sequence[int],
        hidden: int,
        dropout: float,
        n_outputs: int,
    ) -> None:
        super().__init__()
        self.category_sizes = tuple(int(s) for s in category_sizes)
        self.register_buffer("mean", torch.zeros(n_numeric))
        self.register_buffer("std", torch.ones(n_numeric))
        self.register_buffer("mode", torch.zeros(len(self.category_sizes)))
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))
        width = n_numeric + sum(self.category_sizes)
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_outputs),
        )

    @torch.no_grad()
    def set_statistics(self, values: Mapping[str, torch.Tensor]) -> None:
        """Copy normalizers (from :func:`privfed.tasks.tabular.features.normalizers`) in."""
        for name, value in values.items():
            getattr(self, name).copy_(value.reshape(getattr(self, name).shape))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(numeric), self.mean, numeric)
        parts = [(x - self.mean) / self.std]
        # round: averaging identical modes in float32 can land at 1.9999998
        codes = torch.where(codes < 0, self.mode.round().long().expand_as(codes), codes)
        for j, size in enumerate(self.category_sizes):
            parts.append(F.one_hot(codes[:, j], size).to(x.dtype))
        return self.net(torch.cat(parts, dim=1))
