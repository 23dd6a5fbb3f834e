"""The BraTS folder layout: one folder per case, one NIfTI file per modality and the label.

``<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz``, as the BraTS 2021 release names them,
so the loader reads real BraTS cases as well as ours. A hospital is a folder of case folders.
"""

from __future__ import annotations

from pathlib import Path

from privfed.io import DataError

__all__ = [
    "LABEL",
    "MODALITIES",
    "case_dirs",
    "case_file",
    "find_case_file",
    "hospital_case_dirs",
]

#: Image channels in the order the model sees them.
MODALITIES = ("t1", "t1ce", "t2", "flair")
LABEL = "seg"
_SUFFIXES = (".nii.gz", ".nii")


def case_file(case_dir: Path, kind: str) -> Path:
    """Where a case's ``kind`` (a modality or ``seg``) is written."""
    return Path(case_dir) / f"{Path(case_dir).name}_{kind}.nii.gz"


def find_case_file(case_dir: Path, kind: str) -> Path | None:
    """A case's ``kind`` file, compressed or not; None when it is missing."""
    case_dir = Path(case_dir)
    for suffix in _SUFFIXES:
        path = case_dir / f"{case_dir.name}_{kind}{suffix}"
        if path.is_file():
            return path
    return None


def case_dirs(folder: Path) -> list[Path]:
    """The case folders directly under ``folder``, sorted by case id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"missing case folder directory: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def hospital_case_dirs(root: Path) -> dict[str, list[Path]]:
    """``{hospital: case folders}`` for ``root/<hospital>/<case_id>/``; case ids must be unique.

    Raises:
        DataError: no hospital folders, a hospital without cases, or a case id at two hospitals.
    """
    root = Path(root)
    hospitals = [h for h in case_dirs(root) if not h.name.startswith("__")]
    if not hospitals:
        raise DataError(f"{root}: no hospital folders (expected <hospital>/<case_id>/ folders)")
    out: dict[str, list[Path]] = {}
    seen: dict[str, str] = {}
    for hospital in hospitals:
        cases = case_dirs(hospital)
        if not cases:
            raise DataError(f"{hospital}: hospital folder holds no case folders")
        for case in cases:
            if case.name in seen:
                raise DataError(
                    f"case id {case.name!r} is in both {seen[case.name]!r} and {hospital.name!r}; "
                    "case ids must be unique across hospitals"
                )
            seen[case.name] = hospital.name
        out[hospital.name] = cases
    return out
