"""Where annotated notes live: ``<dir>/<hospital>/notes.jsonl`` and evaluation-only cohorts.

Raw and partitioned data hold JSONL records (``note_id``, ``patient_id``, ``hospital``,
``specialty``, ``text``, ``entities``, ``relations``; see :mod:`.brat` for what the annotations
are). The cohorts no hospital trains on (:data:`~.generate.EXTERNAL`,
:data:`~.generate.NEW_SITE`) sit under :data:`RAW_COHORTS` in the raw layout, out of the
hospitals' way; a user's source folder has them as plain folders of those names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privfed.io import DataError, read_jsonl, write_jsonl
from privfed.tasks.extraction.brat import read_brat_folder
from privfed.tasks.extraction.generate import EXTERNAL, NEW_SITE

__all__ = [
    "COHORTS",
    "NOTES_FILE",
    "RAW_COHORTS",
    "cohort_files",
    "hospital_files",
    "read_notes",
    "read_user_folders",
    "write_notes",
]

NOTES_FILE = "notes.jsonl"
#: Folder of the evaluation-only cohorts in the raw layout (not a valid hospital name).
RAW_COHORTS = "_cohorts"
COHORTS = (EXTERNAL, NEW_SITE)
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def read_notes(path: Path) -> list[dict[str, Any]]:
    """The records of one JSONL file; errors name the file and line."""
    path = Path(path)
    out = []
    for number, record in read_jsonl(path):
        missing = [k for k in ("note_id", "text", "entities", "relations") if k not in record]
        if missing:
            raise DataError(f"{path}:{number}: missing key(s) {missing}")
        out.append(record)
    return out


def write_notes(records: Iterable[dict[str, Any]], path: Path) -> None:
    """Write notes as JSONL (temp file, then rename: never a half-written file)."""
    write_jsonl(records, path)


def hospital_files(root: Path) -> dict[str, Path]:
    """``{hospital: root/<hospital>/notes.jsonl}`` (cohorts are one level deeper)."""
    return {p.parent.name: p for p in sorted(Path(root).glob(f"*/{NOTES_FILE}"))}


def cohort_files(root: Path) -> dict[str, Path]:
    """``{cohort: root/<cohort>/notes.jsonl}`` for each evaluation-only cohort present."""
    return {
        c: Path(root) / c / NOTES_FILE for c in COHORTS if (Path(root) / c / NOTES_FILE).is_file()
    }


def read_user_folders(
    source: Path,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """``(hospitals, cohorts)``: each sub-folder of ``source`` read as BRAT standoff.

    Folders named as :data:`COHORTS` are evaluation-only cohorts; every other folder is a
    training hospital.

    Raises:
        DataError: fewer than 2 hospital folders, a bad folder name, or a bad note.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a folder (expected one sub-folder of BRAT notes per site)")
    hospitals: dict[str, list[dict[str, Any]]] = {}
    cohorts: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _SITE_NAME.fullmatch(folder.name):
            raise DataError(
                f"{folder}: site folder names use letters, digits, '_', '.', '-' "
                f"(got {folder.name!r})"
            )
        target = cohorts if folder.name in COHORTS else hospitals
        target[folder.name] = read_brat_folder(folder, hospital=folder.name)
    if len(hospitals) < 2:
        raise DataError(
            f"{source}: found {len(hospitals)} hospital folder(s) ({', '.join(hospitals) or 'none'}"
            f"; {', '.join(COHORTS)} are evaluation-only); a federation needs at least 2"
        )
    return hospitals, cohorts
