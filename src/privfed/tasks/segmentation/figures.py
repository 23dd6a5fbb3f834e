"""Report figures: one axial slice per modality with ground-truth and prediction overlays.

The slice is the one with the most ground-truth tumour voxels, so a reader sees what the model
got right and wrong where it matters. One PNG per case: the top row overlays the ground truth
on each modality, the bottom row the prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from privfed.tasks.segmentation.layout import MODALITIES

if TYPE_CHECKING:
    from torch import nn

    from privfed.tasks.segmentation.task import SegmentationTask
    from privfed.tasks.segmentation.transforms import CaseDataset

__all__ = ["CLASS_NAMES", "overlay_figure", "tumour_slice", "write_case_figures"]

#: Label values 1-3 (0 is background, not drawn).
CLASS_NAMES = ("necrotic core", "oedema", "enhancing tumour")
_COLOURS = ("#e41a1c", "#4daf4a", "#ffd92f")


def tumour_slice(label: np.ndarray) -> int:
    """The axial index (last axis) with the most tumour voxels; the middle if there is none."""
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(np.argmax(counts)) if counts.any() else label.shape[-1] // 2


def overlay_figure(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, *, title: str, out: Path
) -> Path:
    """Write the ``2 x len(MODALITIES)`` panel for one case (``image``: ``[C, X, Y, Z]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from privfed.io import atomic_path

    z = tumour_slice(label)
    cmap = ListedColormap(_COLOURS)
    fig, axes = plt.subplots(2, len(MODALITIES), figsize=(2.4 * len(MODALITIES), 5.2))
    for row, (name, mask) in enumerate((("ground truth", label), ("prediction", pred))):
        overlay = np.ma.masked_equal(mask[..., z].T, 0)
        for col, modality in enumerate(MODALITIES):
            ax = axes[row, col]
            ax.imshow(image[col, :, :, z].T, cmap="gray", origin="lower")
            ax.imshow(overlay - 1, cmap=cmap, vmin=0, vmax=2, alpha=0.5, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(modality.upper(), fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(_COLOURS, CLASS_NAMES, strict=True)],
        loc="lower center",
        ncol=3,
        fontsize=8,
    )
    fig.suptitle(f"{title}, axial slice {z}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def write_case_figures(
    task: SegmentationTask,
    model: nn.Module,
    dataset: CaseDataset,
    out_dir: Path,
    *,
    cases: int = 2,
    label: str = "",
) -> list[Path]:
    """Overlays for the first ``cases`` cases of ``dataset`` (in its order)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    written: list[Path] = []
    try:
        for index in range(min(cases, len(dataset))):
            image, target = dataset[index]
            logits = task.predict(model, image[None].to(device), dataset.settings)
            pred = logits.argmax(dim=1)[0].cpu().numpy()
            case_id = dataset.case_ids[index]
            written.append(
                overlay_figure(
                    image.cpu().numpy(),
                    target[0].cpu().numpy(),
                    pred,
                    title=f"{case_id} ({label})" if label else case_id,
                    out=Path(out_dir) / f"{case_id}.png",
                )
            )
    finally:
        model.train(was_training)
    return written
