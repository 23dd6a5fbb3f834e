"""What valid imaging data looks like: one row of measured properties per case, and its suite.

Each rule has a ``problem_*`` column that is empty for a good case and otherwise says what is
wrong, starting with the case id; the suite expects those columns to be null, so a failure's
unexpected values name the broken cases (Great Expectations reports values, not row ids).
The numeric columns beside them (shape, spacing, intensity percentiles, tumour volume) go to
the Data Docs for a person to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privfed.tasks.base import TableCheck
from privfed.tasks.segmentation.layout import LABEL, MODALITIES, find_case_file

__all__ = ["LABEL_VALUES", "PROBLEMS", "case_properties", "case_table", "table_checks"]

#: 0 background, 1 necrotic / non-enhancing core, 2 oedema, 3 enhancing tumour (BraTS 2023).
LABEL_VALUES = (0, 1, 2, 3)
PROBLEMS = (
    "problem_files",
    "problem_geometry",
    "problem_label",
    "problem_brain",
    "problem_intensity",
)
#: A voxel is head/brain foreground when above this share of its modality's 99th percentile.
_FOREGROUND = 0.1
_MIN_FOREGROUND_SHARE = 0.02
_AFFINE_TOL_MM = 1e-3


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def case_properties(case_dir: Path, hospital: str) -> dict[str, Any]:
    """Measure one case; never raises for bad content (an unreadable file is a problem too)."""
    case_dir = Path(case_dir)
    case = case_dir.name
    row: dict[str, Any] = {"case_id": case, "hospital": hospital}
    row.update({p: None for p in PROBLEMS})
    arrays: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    missing, unreadable = [], []
    for kind in (*MODALITIES, LABEL):
        path = find_case_file(case_dir, kind)
        if path is None:
            missing.append(kind)
            continue
        try:
            arrays[kind], affines[kind] = _load(path)
        except Exception as err:  # a truncated or non-NIfTI file
            unreadable.append(f"{path.name} ({type(err).__name__}: {err})")
    if missing or unreadable:
        parts = [f"missing {', '.join(f'{case}_{k}.nii.gz' for k in missing)}"] if missing else []
        parts += [f"unreadable {', '.join(unreadable)}"] if unreadable else []
        row["problem_files"] = f"{case}: {'; '.join(parts)}"

    # geometry: every file on the label's grid (or the first file's when the label is absent)
    kinds = [k for k in (LABEL, *MODALITIES) if k in arrays]
    if kinds:
        ref = kinds[0]
        row["shape"] = "x".join(map(str, arrays[ref].shape))
        row["spacing_mm"] = "x".join(
            f"{v:.3g}" for v in np.linalg.norm(affines[ref][:3, :3], axis=0)
        )
        bad = []
        for k in kinds[1:]:
            if arrays[k].shape != arrays[ref].shape:
                bad.append(f"{k} shape {arrays[k].shape} != {ref} shape {arrays[ref].shape}")
            elif not np.allclose(affines[k], affines[ref], atol=_AFFINE_TOL_MM):
                diff = float(np.abs(affines[k] - affines[ref]).max())
                bad.append(f"{k} affine differs from {ref}'s by up to {diff:.3g} mm")
        if any(a.ndim != 3 for a in arrays.values()):
            bad.append(
                "not 3-D: " + ", ".join(f"{k} {a.shape}" for k, a in arrays.items() if a.ndim != 3)
            )
        if bad:
            row["problem_geometry"] = f"{case}: {'; '.join(bad)}"

    if LABEL in arrays:
        seg = arrays[LABEL]
        values = np.unique(seg)
        extra = [v for v in values.tolist() if v not in LABEL_VALUES]
        row["label_values"] = ",".join(
            str(int(v)) if float(v).is_integer() else str(v) for v in values
        )
        if extra:
            hint = " (BraTS 2017-2021 label enhancing tumour 4: map it to 3)" if 4 in extra else ""
            row["problem_label"] = (
                f"{case}: label values {extra} outside {list(LABEL_VALUES)}{hint}"
            )
        for name, region in (("wt", (1, 2, 3)), ("tc", (1, 3)), ("et", (3,))):
            row[f"{name}_voxels"] = int(np.isin(seg, region).sum())

    brain_masks = []
    intensity = []
    for m in MODALITIES:
        if m not in arrays:
            continue
        a = arrays[m].astype(np.float64, copy=False)
        finite = np.isfinite(a)
        if not finite.all():
            intensity.append(f"{m} has {int((~finite).sum())} NaN/Inf voxel(s)")
            a = np.where(finite, a, 0.0)
        p99 = float(np.percentile(a, 99))
        row[f"{m}_min"] = float(a.min())
        row[f"{m}_p99"] = p99
        if a.min() < 0:
            intensity.append(f"{m} has negative values (min {a.min():.3g}); MRI magnitude is >= 0")
        if p99 <= 0 or float(a.std()) == 0.0:
            intensity.append(f"{m} is blank (99th percentile {p99:.3g}, sd {a.std():.3g})")
        else:
            brain_masks.append(a > _FOREGROUND * p99)
    if intensity:
        row["problem_intensity"] = f"{case}: {'; '.join(intensity)}"
    if brain_masks and len({m.shape for m in brain_masks}) == 1:
        foreground = np.logical_and.reduce(brain_masks) if len(brain_masks) > 1 else brain_masks[0]
        share = float(foreground.mean())
        row["foreground_share"] = share
        if share < _MIN_FOREGROUND_SHARE:
            row["problem_brain"] = (
                f"{case}: only {share:.1%} of voxels are foreground in all modalities "
                f"(need {_MIN_FOREGROUND_SHARE:.0%}): an empty or mostly blank brain"
            )
    elif not brain_masks:
        row["problem_brain"] = f"{case}: no usable modality to find the brain in"
    return row


def case_table(cases: Sequence[tuple[str, Path]]) -> pd.DataFrame:
    """One row per ``(hospital, case folder)``; columns every row has, in a fixed order."""
    rows = [case_properties(case_dir, hospital) for hospital, case_dir in cases]
    frame = pd.DataFrame(rows)
    fixed = ["case_id", "hospital", *PROBLEMS]
    numeric = [c for c in frame.columns if c not in fixed]
    frame = frame[[*fixed, *sorted(numeric)]]
    for column in PROBLEMS:
        frame[column] = frame[column].astype(object)
    return frame


def table_checks(
    frame: pd.DataFrame, *, hospitals: Sequence[str], min_cases: int
) -> list[TableCheck]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column="case_id"),
        gxe.ExpectColumnValuesToBeUnique(column="case_id"),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=list(hospitals)),
    ]
    exps += [gxe.ExpectColumnValuesToBeNull(column=p) for p in PROBLEMS]
    return [
        TableCheck(
            name="cases",
            frame=frame,
            expectations=exps,
            group_column="hospital",
            per_group=[gxe.ExpectTableRowCountToBeBetween(min_value=min_cases)],
        )
    ]
