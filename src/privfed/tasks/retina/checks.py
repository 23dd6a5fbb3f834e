"""What valid fundus data looks like: one row of measured properties per image, and its suite.

As in the imaging task ``segmentation``, each rule has a ``problem_*`` column that is empty
for a good image and otherwise names the file and what is wrong with it; the suite expects
those columns to be null, so a failure's unexpected values name the broken files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from privfed.tasks.base import TableCheck
from privfed.tasks.retina.layout import IMAGE_COLUMN, LABEL_COLUMN, read_labels

__all__ = ["PROBLEMS", "image_properties", "image_table", "table_checks"]

PROBLEMS = ("problem_file", "problem_size", "problem_content", "problem_label")
#: Fundus photographs are square crops of the round field of view.
_MAX_ASPECT = 1.05
_MIN_STD = 1e-3


def image_properties(folder: Path, name: str, grade: object, *, min_size: int) -> dict[str, Any]:
    """Measure one image; never raises (an unreadable file is a problem too)."""
    from privfed.tasks.retina.transforms import load_gray

    path = Path(folder) / name
    row: dict[str, Any] = {"file": str(path), "hospital": Path(folder).name}
    row.update({p: None for p in PROBLEMS})
    try:
        value = float(grade)
        ok = value.is_integer() and 0 <= value <= 4
    except (TypeError, ValueError):
        ok = False
    row["grade"] = grade if not ok else int(float(grade))
    if not ok:
        row["problem_label"] = f"{path}: grade {grade!r} is not an integer in 0-4"
    try:
        image = load_gray(path)
    except Exception as err:  # missing, truncated, not an image
        row["problem_file"] = f"{path}: unreadable ({type(err).__name__}: {err})"
        return row
    h, w = image.shape
    row.update(height=h, width=w, mean=float(image.mean()), std=float(image.std()))
    if min(h, w) < min_size or max(h, w) > _MAX_ASPECT * min(h, w):
        row["problem_size"] = (
            f"{path}: {w}x{h} pixels; need a square image of at least {min_size}x{min_size} "
            "(model.retina.image_size)"
        )
    if float(image.std()) < _MIN_STD:
        row["problem_content"] = f"{path}: constant image (every pixel {image.mean():.3f})"
    return row


def image_table(folders: Sequence[Path], *, min_size: int) -> pd.DataFrame:
    """One row per image listed in each folder's labels CSV; columns in a fixed order."""
    rows = []
    for folder in folders:
        frame = read_labels(folder)
        for name, grade in zip(frame[IMAGE_COLUMN], frame[LABEL_COLUMN], strict=True):
            rows.append(image_properties(folder, str(name), grade, min_size=min_size))
    frame = pd.DataFrame(rows)
    fixed = ["file", "hospital", *PROBLEMS]
    frame = frame[[*fixed, *sorted(c for c in frame.columns if c not in fixed)]]
    for column in (*PROBLEMS, "grade"):
        frame[column] = frame[column].astype(object)
    return frame


def table_checks(
    frame: pd.DataFrame, *, hospitals: Sequence[str], min_images: int
) -> list[TableCheck]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToBeUnique(column="file"),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=list(hospitals)),
    ]
    exps += [gxe.ExpectColumnValuesToBeNull(column=p) for p in PROBLEMS]
    return [
        TableCheck(
            name="images",
            frame=frame,
            expectations=exps,
            group_column="hospital",
            per_group=[gxe.ExpectTableRowCountToBeBetween(min_value=min_images)],
        )
    ]
