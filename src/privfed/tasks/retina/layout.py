"""The folder layout of fundus images: one folder per hospital (or split) with a labels CSV.

``<folder>/labels.csv`` has columns ``image`` (a file name in ``<folder>``, PNG or JPEG) and
``grade`` (DR severity 0-4). Partition splits use the same layout, so every stage reads one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from privfed.io import DataError

__all__ = ["IMAGE_COLUMN", "LABELS_FILE", "LABEL_COLUMN", "hospital_folders", "read_labels"]

LABELS_FILE = "labels.csv"
IMAGE_COLUMN = "image"
LABEL_COLUMN = "grade"
SUFFIXES = (".png", ".jpg", ".jpeg")


def read_labels(folder: Path) -> pd.DataFrame:
    """``folder/labels.csv`` with its two columns; a missing file or column names itself."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        raise DataError(f"{folder}: missing {LABELS_FILE} (columns {IMAGE_COLUMN}, {LABEL_COLUMN})")
    frame = pd.read_csv(path, dtype={IMAGE_COLUMN: str})
    missing = [c for c in (IMAGE_COLUMN, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def hospital_folders(root: Path) -> dict[str, Path]:
    """``{hospital: folder}`` for every sub-folder of ``root`` that holds a labels CSV."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"missing image directory: {root}")
    found = {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith((".", "__")) and (p / LABELS_FILE).is_file()
    }
    if not found:
        raise DataError(f"{root}: no hospital folders with a {LABELS_FILE}")
    return found
