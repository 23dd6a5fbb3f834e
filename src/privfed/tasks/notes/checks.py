"""What valid notes look like: one row per note with measured properties, and its suite.

Each rule has a ``problem_*`` column that is empty for a good note and otherwise says what is
wrong, starting with the note id; the suite expects those columns to be null, so a failure's
unexpected values name the offending notes (Great Expectations reports values, not row ids).

The PHI screen flags text that looks like a US social security number, a phone number, an
e-mail address or a medical record number: notes are meant to be de-identified before they
reach the pipeline, and one that is not must stop it. The matched value is masked in the
message, since validation reports are shared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from privfed.tasks.base import TableCheck
from privfed.tasks.notes.generate import NOTE_TYPES

__all__ = ["ALLOWED_NOTE_TYPES", "PHI_PATTERNS", "PROBLEMS", "note_table", "phi_findings"]

#: Our three types, and ``unknown`` for a user's ``.txt`` note without a type header.
ALLOWED_NOTE_TYPES = (*NOTE_TYPES, "unknown")
PROBLEMS = ("problem_empty", "problem_length", "problem_note_type", "problem_phi")
PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    "an SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "a phone number": re.compile(
        r"(?<![\w/.])(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}\b"
    ),
    "an e-mail address": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "a medical record number": re.compile(
        r"\b(?:MRN|medical record (?:number|no\.?)|record #)\s*[:#]?\s*\d{5,}\b", re.IGNORECASE
    ),
}


def _mask(value: str) -> str:
    """Keep the shape, hide most digits: ``123-45-6789`` -> ``***-**-*789``."""
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    hide = set(digits[:-3])
    masked = "".join("*" if i in hide else c for i, c in enumerate(value))
    if "@" in masked:
        user, domain = masked.split("@", 1)
        masked = f"{user[:1]}***@{domain}"
    return masked


def phi_findings(text: str) -> list[str]:
    """``"looks like an SSN ('***-**-*789')"`` for each PHI pattern ``text`` matches."""
    out = []
    for what, pattern in PHI_PATTERNS.items():
        match = pattern.search(text)
        if match:
            out.append(f"looks like {what} ({_mask(match.group(0))!r})")
    return out


def _row(record: Mapping[str, Any], hospital: str, *, min_words: int, max_words: int) -> dict:
    note = str(record.get("note_id", ""))
    text = str(record.get("text", ""))
    words = len(text.split())
    note_type = str(record.get("note_type", "unknown"))
    phi = phi_findings(text)
    return {
        "note_id": note,
        "patient_id": str(record.get("patient_id", note)),
        "hospital": hospital,
        "note_type": note_type,
        "specialty": str(record.get("specialty", "unknown")),
        "n_chars": len(text),
        "n_words": words,
        "problem_empty": f"{note}: empty text" if not text.strip() else None,
        "problem_length": (
            f"{note}: {words} words, outside [{min_words}, {max_words}]"
            if text.strip() and not min_words <= words <= max_words
            else None
        ),
        "problem_note_type": (
            f"{note}: note type {note_type!r} not in {list(ALLOWED_NOTE_TYPES)}"
            if note_type not in ALLOWED_NOTE_TYPES
            else None
        ),
        "problem_phi": f"{note}: {'; '.join(phi)}" if phi else None,
    }


def note_table(
    by_hospital: Mapping[str, Sequence[Mapping[str, Any]]], *, min_words: int, max_words: int
) -> pd.DataFrame:
    """One row per note: ids, type, length, and the ``problem_*`` columns."""
    rows = [
        _row(r, hospital, min_words=min_words, max_words=max_words)
        for hospital, records in by_hospital.items()
        for r in records
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "note_id",
            "patient_id",
            "hospital",
            "note_type",
            "specialty",
            "n_chars",
            "n_words",
            *PROBLEMS,
        ],
    )
    for column in PROBLEMS:
        frame[column] = frame[column].astype(object)
    return frame


def table_checks(
    frame: pd.DataFrame, *, hospitals: Sequence[str], min_notes: int
) -> list[TableCheck]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column="note_id"),
        gxe.ExpectColumnValuesToBeUnique(column="note_id"),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=list(hospitals)),
        gxe.ExpectColumnValuesToBeInSet(column="note_type", value_set=list(ALLOWED_NOTE_TYPES)),
    ]
    exps += [gxe.ExpectColumnValuesToBeNull(column=p) for p in PROBLEMS]
    return [
        TableCheck(
            name="notes",
            frame=frame,
            expectations=exps,
            group_column="hospital",
            per_group=[gxe.ExpectTableRowCountToBeBetween(min_value=min_notes)],
        )
    ]
