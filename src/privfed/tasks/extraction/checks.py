"""What valid annotated notes look like: one row per note, and its expectation suite.

Each rule has a ``problem_*`` column, empty for a good note and otherwise naming the note and
what is wrong, so a failure's unexpected values name the notes. The PHI screen is the notes
task's (SSN, phone, e-mail, record number; matches masked). The evaluation-only cohorts are
checked the same way, without the per-hospital size rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from privfed.tasks.base import TableCheck
from privfed.tasks.extraction.schema import ENTITY_TYPES, RELATION_OF
from privfed.tasks.notes.checks import phi_findings

__all__ = ["PROBLEMS", "annotation_problems", "note_table", "table_checks"]

PROBLEMS = ("problem_empty", "problem_annotation", "problem_phi")


def annotation_problems(record: Mapping[str, Any]) -> list[str]:
    """What is wrong with a record's spans and relations (offsets, types, arguments)."""
    text = str(record.get("text", ""))
    out = []
    by_id = {}
    for e in record.get("entities", []):
        if e.get("type") not in ENTITY_TYPES:
            out.append(f"entity {e.get('id')} has type {e.get('type')!r}")
        if not 0 <= int(e.get("start", -1)) < int(e.get("end", -1)) <= len(text):
            out.append(
                f"entity {e.get('id')} span {e.get('start')}-{e.get('end')} is outside the text"
            )
        by_id[e.get("id")] = e
    for r in record.get("relations", []):
        head, tail = by_id.get(r.get("head")), by_id.get(r.get("tail"))
        if head is None or tail is None:
            out.append(f"relation {r} names an unknown entity")
        elif RELATION_OF.get(tail["type"]) != (head["type"], r.get("type")):
            out.append(f"relation {r.get('type')!r} cannot link {head['type']} to {tail['type']}")
    return out


def _row(record: Mapping[str, Any], site: str) -> dict[str, Any]:
    note = str(record.get("note_id", ""))
    text = str(record.get("text", ""))
    phi = phi_findings(text)
    problems = annotation_problems(record)
    return {
        "note_id": note,
        "patient_id": str(record.get("patient_id", note)),
        "hospital": site,
        "n_chars": len(text),
        "n_entities": len(record.get("entities", [])),
        "n_relations": len(record.get("relations", [])),
        "problem_empty": f"{note}: empty text" if not text.strip() else None,
        "problem_annotation": f"{note}: {'; '.join(problems)}" if problems else None,
        "problem_phi": f"{note}: {'; '.join(phi)}" if phi else None,
    }


def note_table(by_site: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    rows = [_row(r, site) for site, records in by_site.items() for r in records]
    columns = ["note_id", "patient_id", "hospital", "n_chars", "n_entities", "n_relations"]
    frame = pd.DataFrame(rows, columns=[*columns, *PROBLEMS])
    for column in PROBLEMS:
        frame[column] = frame[column].astype(object)
    return frame


def table_checks(
    hospitals_table: pd.DataFrame,
    cohorts_table: pd.DataFrame,
    *,
    hospitals: Sequence[str],
    min_notes: int,
) -> list[TableCheck]:
    import great_expectations.expectations as gxe

    def common() -> list[Any]:
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="note_id"),
            gxe.ExpectColumnValuesToBeUnique(column="note_id"),
            *(gxe.ExpectColumnValuesToBeNull(column=p) for p in PROBLEMS),
        ]

    checks = [
        TableCheck(
            name="annotated_notes",
            frame=hospitals_table,
            expectations=[
                *common(),
                gxe.ExpectColumnDistinctValuesToEqualSet(
                    column="hospital", value_set=list(hospitals)
                ),
            ],
            group_column="hospital",
            per_group=[gxe.ExpectTableRowCountToBeBetween(min_value=min_notes)],
        )
    ]
    if len(cohorts_table):
        checks.append(
            TableCheck(name="evaluation_cohorts", frame=cohorts_table, expectations=common())
        )
    return checks
