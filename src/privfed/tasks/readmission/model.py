"""Multimodal readmission model: temporal CNN encoders for the sequences fused with static MLPs.

Only layers Opacus computes per-sample gradients for (Conv1d, Linear, LayerNorm); no BatchNorm,
whose statistics mix samples and break DP-SGD's per-sample clipping.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ReadmissionNet"]


class _SequenceEncoder(nn.Module):
    """Two dilated causal-ish conv layers, then mean and last-step pooling."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, hidden, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=5, padding=4, dilation=2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        recent = h[..., -7:].mean(dim=-1)  # the days right before discharge carry the signal
        return torch.cat([h.mean(dim=-1), recent], dim=-1)


def _mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout))


class ReadmissionNet(nn.Module):
    def __init__(
        self,
        *,
        n_vitals: int,
        n_labs: int,
        n_static: int,
        n_genes: int,
        hidden: int,
        dropout: float,
        n_classes: int = 3,
    ) -> None:
        super().__init__()
        self.vitals = _SequenceEncoder(n_vitals, hidden)
        self.labs = _SequenceEncoder(n_labs, hidden)
        self.static = _mlp(n_static, hidden, dropout)
        self.genes = _mlp(n_genes, hidden, dropout)
        self.head = nn.Sequential(
            nn.LayerNorm(6 * hidden),
            nn.Linear(6 * hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(
        self,
        vitals: torch.Tensor,
        labs: torch.Tensor,
        static: torch.Tensor,
        genes: torch.Tensor,
    ) -> torch.Tensor:
        fused = torch.cat(
            [self.vitals(vitals), self.labs(labs), self.static(static), self.genes(genes)], dim=-1
        )
        return self.head(fused)
