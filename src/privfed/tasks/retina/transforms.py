"""The preprocessing every stage shares, and the dataset of preprocessed fundus images.

The seed's chain, in order: grayscale; pixel binning to the model's grid (box-filter
averaging, so a 2x camera's four pixels become one); intensities to [0, 1]; CLAHE (contrast-
limited adaptive histogram equalization, written here in NumPy: scikit-image is not a
dependency); gamma correction; rescaling to [-1, 1], the generator's tanh range. Training,
evaluation, validation and the report all go through :func:`preprocess`, so the generator
learns exactly the distribution it is scored against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from privfed.io import DataError
from privfed.tasks.retina.layout import IMAGE_COLUMN, LABEL_COLUMN, read_labels

__all__ = ["RetinaDataset", "clahe", "load_gray", "preprocess", "preprocess_as"]


def clahe(image: np.ndarray, *, tiles: int = 4, clip: float = 0.01, bins: int = 256) -> np.ndarray:
    """CLAHE of a ``[H, W]`` image in [0, 1]; returns [0, 1].

    Each of ``tiles x tiles`` tiles gets a histogram whose bins are clipped at ``clip`` of
    the tile's pixels (the excess spread evenly over all bins), and its cumulative histogram
    as mapping; each pixel blends the mappings of its four nearest tile centres bilinearly,
    as Zuiderveld's CLAHE (and scikit-image's ``equalize_adapthist``) does.
    """
    h, w = image.shape
    q = np.clip((image * (bins - 1)).round().astype(np.int64), 0, bins - 1)
    ty = np.linspace(0, h, tiles + 1).round().astype(int)
    tx = np.linspace(0, w, tiles + 1).round().astype(int)
    maps = np.empty((tiles, tiles, bins))
    for i in range(tiles):
        for j in range(tiles):
            tile = q[ty[i] : ty[i + 1], tx[j] : tx[j + 1]]
            hist = np.bincount(tile.ravel(), minlength=bins).astype(np.float64)
            limit = max(1.0, clip * tile.size)
            excess = np.maximum(hist - limit, 0).sum()
            hist = np.minimum(hist, limit) + excess / bins
            cdf = np.cumsum(hist)
            maps[i, j] = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1e-12)
    # tile centres and each pixel's position between them
    cy = (ty[:-1] + ty[1:]) / 2
    cx = (tx[:-1] + tx[1:]) / 2
    fy = np.clip(np.interp(np.arange(h) + 0.5, cy, np.arange(tiles)), 0, tiles - 1)
    fx = np.clip(np.interp(np.arange(w) + 0.5, cx, np.arange(tiles)), 0, tiles - 1)
    y0 = np.floor(fy).astype(int)
    x0 = np.floor(fx).astype(int)
    y1 = np.minimum(y0 + 1, tiles - 1)
    x1 = np.minimum(x0 + 1, tiles - 1)
    wy = (fy - y0)[:, None]
    wx = (fx - x0)[None, :]
    Y0, X0, Y1, X1 = y0[:, None], x0[None, :], y1[:, None], x1[None, :]
    top = maps[Y0, X0, q] * (1 - wx) + maps[Y0, X1, q] * wx
    bottom = maps[Y1, X0, q] * (1 - wx) + maps[Y1, X1, q] * wx
    return top * (1 - wy) + bottom * wy


def load_gray(path: Path) -> np.ndarray:
    """An image file as grayscale ``float64 [H, W]`` in [0, 1] (PIL's ITU-R 601 luma)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def _bin(image: np.ndarray, size: int) -> np.ndarray:
    """Box-filter resampling to ``size x size`` (pixel binning; exact for integer factors)."""
    from PIL import Image

    if image.shape == (size, size):
        return image
    img = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def preprocess(
    image: np.ndarray,
    *,
    size: int,
    use_clahe: bool = True,
    clahe_clip: float = 0.01,
    clahe_tiles: int = 4,
    gamma: float = 1.0,
) -> np.ndarray:
    """Grayscale [0, 1] image of any size -> ``float32 [size, size]`` in [-1, 1]."""
    x = np.clip(_bin(image, size), 0.0, 1.0)
    if use_clahe:
        fov = x > 0.02  # the black surround stays black: CLAHE would lift its noise
        x = np.where(fov, clahe(x, tiles=clahe_tiles, clip=clahe_clip), 0.0)
    if gamma != 1.0:
        x = x**gamma
    return (x * 2.0 - 1.0).astype(np.float32)


def preprocess_as(image: np.ndarray, settings: object) -> np.ndarray:
    """:func:`preprocess` with the ``model.retina`` settings every stage shares."""
    return preprocess(
        image,
        size=settings.image_size,
        use_clahe=settings.clahe,
        clahe_clip=settings.clahe_clip,
        clahe_tiles=settings.clahe_tiles,
        gamma=settings.gamma,
    )


class RetinaDataset(Dataset):
    """Preprocessed images ``[1, S, S]`` in [-1, 1] and grades of the folders ``split_dirs``.

    Everything is loaded once into memory (a few MB at 64 x 64). ``files`` keeps each
    image's path, in order, so figures and the memorization check can name them.
    """

    def __init__(self, split_dirs: Sequence[Path], settings: object) -> None:
        if not split_dirs:
            raise ValueError("RetinaDataset needs at least one folder")
        self.split_dirs = [Path(d) for d in split_dirs]
        self.settings = settings
        images, labels, files = [], [], []
        for folder in self.split_dirs:
            frame = read_labels(folder)
            for name, grade in zip(frame[IMAGE_COLUMN], frame[LABEL_COLUMN], strict=True):
                path = folder / str(name)
                try:
                    gray = load_gray(path)
                except Exception as err:
                    raise DataError(f"{path}: unreadable image ({err})") from err
                images.append(preprocess_as(gray, settings))
                labels.append(int(grade))
                files.append(path)
        if not images:
            raise DataError(f"no images in {[str(d) for d in self.split_dirs]}")
        self.images = torch.from_numpy(np.stack(images))[:, None]
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.files = files

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
