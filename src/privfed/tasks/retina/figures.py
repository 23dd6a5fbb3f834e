"""Sample grids: one row per DR grade, fixed latent codes, so models compare cell by cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from privfed.tasks.retina.generate import GRADES

__all__ = ["image_grid", "real_grid", "sample_grid"]


def image_grid(rows: list[np.ndarray], *, title: str, out: Path) -> Path:
    """Write rows of ``[S, S]`` images in [-1, 1] as one PNG, each row labelled with a grade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from privfed.io import atomic_path

    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols, 1.15 * len(rows) + 0.4))
    axes = np.atleast_2d(axes)
    for i, row in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=-1, vmax=1)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(f"{i} {GRADES[i]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return out


def sample_grid(
    gan: nn.Module, out: Path, *, title: str, per_grade: int = 8, seed: int = 0
) -> Path:
    """``per_grade`` samples of each grade from seeded latent codes."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for grade in range(len(GRADES)):
        images = gan.sample(torch.full((per_grade,), grade, dtype=torch.long), generator=gen)
        rows.append([im[0].cpu().numpy() for im in images])
    return image_grid(rows, title=title, out=out)


def real_grid(
    images: torch.Tensor, labels: torch.Tensor, out: Path, *, title: str, per_grade: int = 8
) -> Path:
    """The first ``per_grade`` real images of each grade (empty rows where a grade is absent)."""
    rows = []
    for grade in range(len(GRADES)):
        chosen = images[labels == grade][:per_grade]
        rows.append([im[0].cpu().numpy() for im in chosen])
    return image_grid(rows, title=title, out=out)
