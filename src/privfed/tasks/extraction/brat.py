"""BRAT standoff, the one format annotated notes come in: ``<id>.txt`` beside ``<id>.ann``.

A hospital's folder holds one ``.txt`` per note (UTF-8; offsets count characters of it as
written) and its ``.ann``::

    T1<TAB>PROBLEM 27 37<TAB>chest pain
    T2<TAB>NEGATION 20 26<TAB>Denies
    R1<TAB>negation Arg1:T1 Arg2:T2

``T`` lines are entities (a type of :data:`~privfed.tasks.extraction.schema.ENTITY_TYPES`,
case-insensitive; start and end character offsets, end exclusive; the covered text, which must
equal the ``.txt`` there). ``R`` lines are relations from a concept (``Arg1``) to its modifier
(``Arg2``), typed as :data:`~privfed.tasks.extraction.schema.RELATION_OF` says. Attribute,
normalization, note and equivalence lines (``A``, ``M``, ``N``, ``#``, ``*``) are read and
ignored. An optional ``patients.csv`` (``note_id,patient_id[,specialty]``) says whose note is
whose (per-patient DP); without it every note is its own patient. Every error names the file,
its line and the character offset at fault.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privfed.io import DataError
from privfed.tasks.extraction.schema import ENTITY_TYPES, RELATION_OF

__all__ = ["PATIENTS_FILE", "read_brat_folder", "read_brat_note", "write_brat_folder"]

PATIENTS_FILE = "patients.csv"
_TYPES = {t.lower(): t for t in ENTITY_TYPES}
_RELATIONS = {rel: (concept, modifier) for modifier, (concept, rel) in RELATION_OF.items()}


def _entity(line: str, where: str, text: str, txt_path: Path) -> tuple[str, dict[str, Any]]:
    parts = line.split("\t")
    if len(parts) < 2:
        raise DataError(f"{where}: expected 'T<n><TAB>TYPE START END<TAB>text', got {line!r}")
    eid, spec = parts[0], parts[1]
    if ";" in spec:
        raise DataError(
            f"{where}: entity {eid} has a discontinuous span ({spec!r}); only one "
            "start-end range per entity is supported"
        )
    fields = spec.split()
    if len(fields) != 3:
        raise DataError(f"{where}: entity {eid}: expected 'TYPE START END', got {spec!r}")
    kind = _TYPES.get(fields[0].lower())
    if kind is None:
        raise DataError(
            f"{where}: entity {eid} has type {fields[0]!r}; expected one of {list(ENTITY_TYPES)}"
        )
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise DataError(f"{where}: entity {eid}: offsets {fields[1:]!r} are not integers") from None
    if not 0 <= start < end <= len(text):
        raise DataError(
            f"{where}: entity {eid} span {start}-{end} is outside {txt_path.name} "
            f"({len(text)} characters) or empty"
        )
    covered = text[start:end]
    # BRAT shows a newline inside a span as a blank
    if len(parts) > 2 and parts[2] not in (covered, covered.replace("\n", " ")):
        raise DataError(
            f"{where}: entity {eid} at offset {start}: the .ann says {parts[2]!r} but "
            f"{txt_path.name}[{start}:{end}] is {covered!r}"
        )
    return eid, {"id": eid, "type": kind, "start": start, "end": end}


def _relation(line: str, where: str, entities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    parts = line.split("\t")
    fields = parts[1].split() if len(parts) > 1 else []
    if len(fields) != 3:
        raise DataError(f"{where}: expected 'R<n><TAB>type Arg1:T<i> Arg2:T<j>', got {line!r}")
    kind, *args = fields
    if kind not in _RELATIONS:
        raise DataError(
            f"{where}: relation {parts[0]} has type {kind!r}; expected one of {list(_RELATIONS)}"
        )
    ids = dict(a.split(":", 1) for a in args if ":" in a)
    if set(ids) != {"Arg1", "Arg2"}:
        raise DataError(f"{where}: relation {parts[0]} needs Arg1: and Arg2:, got {args}")
    for role in ("Arg1", "Arg2"):
        if ids[role] not in entities:
            raise DataError(
                f"{where}: relation {parts[0]} {role} names unknown entity {ids[role]!r}"
            )
    head, tail = entities[ids["Arg1"]], entities[ids["Arg2"]]
    concept, modifier = _RELATIONS[kind]
    if head["type"] != concept or tail["type"] != modifier:
        raise DataError(
            f"{where}: relation {parts[0]} ({kind}) must link a {concept} (Arg1) to a "
            f"{modifier} (Arg2); got {head['type']} at offset {head['start']} and "
            f"{tail['type']} at offset {tail['start']}"
        )
    return {"type": kind, "head": ids["Arg1"], "tail": ids["Arg2"]}


def read_brat_note(txt_path: Path) -> dict[str, Any]:
    """One note: its text, entities and relations (``note_id`` is the file's stem).

    Raises:
        DataError: unreadable files, a missing ``.ann``, or a line that does not fit the text
            (named by file, line and offset).
    """
    txt_path = Path(txt_path)
    ann_path = txt_path.with_suffix(".ann")
    try:
        # newline="" keeps '\r\n' as two characters, as BRAT counts them
        with open(txt_path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {txt_path}: {err} (notes must be UTF-8 text)") from err
    if not ann_path.is_file():
        raise DataError(f"{txt_path}: no annotation file {ann_path.name} beside it")
    entities: dict[str, dict[str, Any]] = {}
    relations: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []
    lines = ann_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        where = f"{ann_path}:{number}"
        if not line.strip():
            continue
        tag = line[:1]
        if tag == "T":
            eid, entity = _entity(line, where, text, txt_path)
            if eid in entities:
                raise DataError(f"{where}: entity id {eid} is used twice")
            entities[eid] = entity
        elif tag == "R":
            pending.append((line, where))  # arguments may be defined further down
        elif tag in "AMN#*":
            continue
        else:
            raise DataError(f"{where}: unknown BRAT line kind {tag!r} in {line!r}")
    for line, where in pending:
        relations.append(_relation(line, where, entities))
    return {
        "note_id": txt_path.stem,
        "text": text,
        "entities": sorted(entities.values(), key=lambda e: (e["start"], e["end"])),
        "relations": relations,
    }


def _patients(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / PATIENTS_FILE
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for number, row in enumerate(rows, start=2):
        if not row.get("note_id") or not row.get("patient_id"):
            raise DataError(f"{path}:{number}: needs note_id and patient_id, got {row}")
        out[row["note_id"]] = row
    return out


def read_brat_folder(folder: Path, *, hospital: str) -> list[dict[str, Any]]:
    """Every ``*.txt`` note of ``folder`` with its annotations, as ``hospital``'s records."""
    folder = Path(folder)
    notes = sorted(folder.glob("*.txt"))
    if not notes:
        raise DataError(f"{folder}: no .txt notes (expected BRAT standoff: <id>.txt + <id>.ann)")
    patients = _patients(folder)
    unknown = sorted(set(patients) - {p.stem for p in notes})
    if unknown:
        raise DataError(f"{folder / PATIENTS_FILE}: lists notes with no .txt: {unknown[:5]}")
    records = []
    for path in notes:
        record = read_brat_note(path)
        row = patients.get(record["note_id"], {})
        record["patient_id"] = row.get("patient_id") or record["note_id"]
        record["specialty"] = row.get("specialty") or "unknown"
        record["hospital"] = hospital
        records.append(record)
    return records


def write_brat_folder(records: Iterable[dict[str, Any]], folder: Path) -> None:
    """``<note_id>.txt`` + ``.ann`` per record, and ``patients.csv`` (the reader's inverse)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in records:
        text = r["text"]
        with open(folder / f"{r['note_id']}.txt", "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        lines = [
            f"{e['id']}\t{e['type']} {e['start']} {e['end']}\t{text[e['start'] : e['end']]}"
            for e in r["entities"]
        ]
        lines += [
            f"R{i}\t{rel['type']} Arg1:{rel['head']} Arg2:{rel['tail']}"
            for i, rel in enumerate(r["relations"], start=1)
        ]
        (folder / f"{r['note_id']}.ann").write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows.append(
            {
                "note_id": r["note_id"],
                "patient_id": r.get("patient_id", r["note_id"]),
                "specialty": r.get("specialty", "unknown"),
            }
        )
    with (folder / PATIENTS_FILE).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["note_id", "patient_id", "specialty"])
        writer.writeheader()
        writer.writerows(rows)
