"""Where notes live: ``<dir>/<hospital>/notes.jsonl``, and reading a consortium's own notes.

A user's own data is one folder per hospital holding ``.txt`` files (one note each; the file
name is the note id) and/or ``.jsonl`` files (one note per line, our keys). Errors name the
file (and line) at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privfed.io import DataError, read_jsonl, write_jsonl

__all__ = [
    "NOTES_FILE",
    "REQUIRED_KEYS",
    "hospital_note_files",
    "read_notes",
    "read_user_notes",
    "write_notes",
]

NOTES_FILE = "notes.jsonl"
REQUIRED_KEYS = ("note_id", "text")
_DEFAULTS = {"note_type": "unknown", "specialty": "unknown"}
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: A ``.txt`` note may start with header lines such as ``Note type: discharge_summary``.
_HEADER = re.compile(r"^(note[ _]type|specialty|patient[ _]id)\s*:\s*(\S+)\s*$", re.IGNORECASE)


def _complete(record: dict[str, Any], hospital: str, where: str) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; every note needs {REQUIRED_KEYS}")
    out = {**_DEFAULTS, **record, "hospital": hospital}
    out["note_id"], out["text"] = str(out["note_id"]), str(out["text"])
    out.setdefault("patient_id", out["note_id"])
    out["patient_id"] = str(out["patient_id"])
    return out


def read_notes(path: Path, *, hospital: str | None = None) -> list[dict[str, Any]]:
    """The notes of a JSONL file (``hospital`` overrides the records' own, for a user's files)."""
    path = Path(path)
    records = []
    for number, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        owner = hospital or str(record.get("hospital", ""))
        if not owner:
            raise DataError(f"{path}:{number}: no 'hospital' key")
        records.append(_complete(record, owner, f"{path}:{number}"))
    return records


def write_notes(records: Iterable[dict[str, Any]], path: Path) -> None:
    """Write notes as JSONL (temp file, then rename: never a half-written file)."""
    write_jsonl(records, path)


def hospital_note_files(root: Path) -> dict[str, Path]:
    """``{hospital: root/<hospital>/notes.jsonl}`` for each hospital folder holding one."""
    return {p.parent.name: p for p in sorted(Path(root).glob(f"*/{NOTES_FILE}"))}


def _read_txt(path: Path, hospital: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err} (notes must be UTF-8 text)") from err
    record: dict[str, Any] = {"note_id": path.stem}
    lines = text.splitlines()
    while lines and (match := _HEADER.match(lines[0])):
        record[match.group(1).lower().replace(" ", "_")] = match.group(2)
        lines.pop(0)
    record["text"] = "\n".join(lines).strip()
    return _complete(record, hospital, str(path))


def read_user_notes(source: Path) -> dict[str, list[dict[str, Any]]]:
    """A consortium's notes: ``source/<hospital>/*.txt`` and/or ``*.jsonl``, per hospital.

    Raises:
        DataError: no hospital folders (or fewer than 2), a folder without notes, a bad
            folder name, or an unreadable file; each names the path.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a folder (expected one sub-folder of notes per hospital)")
    folders = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    out: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        if not _SITE_NAME.fullmatch(folder.name):
            raise DataError(
                f"{folder}: hospital folder names use letters, digits, '_', '.', '-' "
                f"(got {folder.name!r})"
            )
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".jsonl")
        )
        if not files:
            raise DataError(f"{folder}: no .txt or .jsonl notes")
        records: list[dict[str, Any]] = []
        for path in files:
            if path.suffix.lower() == ".txt":
                records.append(_read_txt(path, folder.name))
            else:
                records += read_notes(path, hospital=folder.name)
        out[folder.name] = records
    if len(out) < 2:
        raise DataError(
            f"{source}: found {len(out)} hospital folder(s) ({', '.join(out) or 'none'}); "
            "a federation needs at least 2"
        )
    return out
