"""Task ``notes`` data: seeded generator, hospital differences, a user's notes, PHI screen."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from privfed.io import DataError
from privfed.tasks.notes.checks import note_table, phi_findings, table_checks
from privfed.tasks.notes.generate import generate_hospitals, public_corpus
from privfed.tasks.notes.layout import read_notes, read_user_notes
from privfed.validation import format_failures, run_checks

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("notes")
    generate_hospitals(HOSPITALS, out, seed=11, notes_per_hospital=150)
    return {h: read_notes(out / h / "notes.jsonl") for h in HOSPITALS}


def test_same_seed_same_bytes_other_seed_other_notes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_hospitals(HOSPITALS[:2], tmp_path / name, seed=seed, notes_per_hospital=20)
    data = {n: (tmp_path / n / "hospital_2" / "notes.jsonl").read_bytes() for n in "abc"}
    assert data["a"] == data["b"]
    assert data["a"] != data["c"]


def test_notes_have_sections_vocabulary_and_unique_ids(notes) -> None:
    records = [r for rs in notes.values() for r in rs]
    assert len({r["note_id"] for r in records}) == len(records) == 450
    assert {r["note_type"] for r in records} == {
        "discharge_summary",
        "progress_note",
        "radiology_report",
    }
    text = "\n".join(r["text"] for r in records).lower()
    for marker in ("assessment", "plan", "impression", " mg ", "bp ", "mmol/l"):
        assert marker in text, marker
    words = [len(r["text"].split()) for r in records]
    assert min(words) >= 20 and max(words) <= 400
    # a grammar, not a few templates: most notes are distinct
    assert len({r["text"] for r in records}) == len(records)


def test_hospitals_differ_in_specialty_style_and_length(notes) -> None:
    lead = {h: Counter(r["specialty"] for r in rs).most_common(1)[0][0] for h, rs in notes.items()}
    assert len(set(lead.values())) == 3  # each hospital has its own lead specialty
    upper = {
        h: np.mean([bool(re.match(r"[A-Z][A-Z ]+:", r["text"])) for r in rs])
        for h, rs in notes.items()
    }
    abbrev = {
        h: np.mean([" pt " in r["text"] or "w/" in r["text"] for r in rs])
        for h, rs in notes.items()
    }
    length = {h: np.mean([len(r["text"].split()) for r in rs]) for h, rs in notes.items()}
    assert upper["hospital_1"] > 0.9 and upper["hospital_2"] < 0.1
    assert abbrev["hospital_2"] > abbrev["hospital_1"] + 0.2
    assert length["hospital_3"] > length["hospital_2"] * 1.15


def test_public_corpus_is_deterministic_and_holds_no_hospital_note(notes) -> None:
    corpus = public_corpus(seed=5, n_notes=200)
    assert corpus == public_corpus(seed=5, n_notes=200)
    hospital_texts = {r["text"] for rs in notes.values() for r in rs}
    assert not hospital_texts & set(corpus)
    assert "metoprolol tartrate 25 mg PO BID" in corpus  # the public medical terms


def test_public_corpus_spans_every_writing_style() -> None:
    """Many authors: both header styles, abbreviated and plain text, bullets and prose."""
    notes = public_corpus(seed=5, n_notes=200)[:200]
    upper = sum(bool(re.search(r"^[A-Z ]+:", t, re.M)) for t in notes) / len(notes)
    bullets = sum("\n- " in t for t in notes) / len(notes)
    abbreviated = sum(bool(re.search(r"\b(pt|hx|w/)\b", t)) for t in notes) / len(notes)
    assert 0.25 < upper < 0.75 and 0.25 < bullets < 0.75
    assert 0.2 < abbreviated < 0.95


PLANTED = {
    "an SSN": "Patient SSN 123-45-6789 on file.",
    "a phone number": "Call back at (555) 123-4567 today.",
    "a phone number ": "Call back at 555-123-4567 today.",
    "a phone number  ": "Call back at 555.123.4567 today.",
    "a phone number   ": "Call back at +1 555 123 4567 today.",
    "an e-mail address": "Results sent to jane.doe@example.org.",
    "a medical record number": "MRN: 12345678 admitted.",
    "a medical record number ": "MRN#1234567 admitted.",
    "a medical record number  ": "medical record number 7654321 admitted.",
}


@pytest.mark.parametrize("what", list(PLANTED))
def test_phi_screen_catches_each_planted_pattern(what: str, notes, tmp_path: Path) -> None:
    # Prepare: generated notes, one of them carrying the planted value
    by_hospital = {h: [dict(r) for r in rs[:20]] for h, rs in notes.items()}
    target = by_hospital["hospital_2"][3]
    target["text"] += " " + PLANTED[what]
    table = note_table(by_hospital, min_words=20, max_words=600)
    # Execute
    outcome = run_checks(table_checks(table, hospitals=HOSPITALS, min_notes=5), tmp_path)
    # Assert: validation fails naming the note and the kind of value (masked)
    assert not outcome.success
    text = format_failures(outcome.failures)
    assert target["note_id"] in text and f"looks like {what.strip()}" in text
    assert "123-45-6789" not in text and "12345678" not in text


def test_generated_notes_pass_validation(notes, tmp_path: Path) -> None:
    table = note_table(notes, min_words=20, max_words=600)
    outcome = run_checks(table_checks(table, hospitals=HOSPITALS, min_notes=5), tmp_path)
    assert outcome.success, format_failures(outcome.failures)
    for text in ("BP 132/84, HR 78, SpO2 97%", "creatinine 1.23 mg/dL on 2026-11-23"):
        assert phi_findings(text) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"text": "   "}, "empty text"),
        ({"text": "word " * 700}, "700 words, outside [20, 600]"),
        ({"note_type": "autopsy"}, "note type 'autopsy'"),
    ],
)
def test_bad_notes_fail_with_their_id(change, expected, notes, tmp_path: Path) -> None:
    by_hospital = {h: [dict(r) for r in rs[:20]] for h, rs in notes.items()}
    bad = by_hospital["hospital_1"][0]
    bad.update(change)
    table = note_table(by_hospital, min_words=20, max_words=600)
    outcome = run_checks(table_checks(table, hospitals=HOSPITALS, min_notes=5), tmp_path)
    text = format_failures(outcome.failures)
    assert not outcome.success and bad["note_id"] in text and expected in text


def test_duplicate_note_ids_fail(notes, tmp_path: Path) -> None:
    by_hospital = {h: [dict(r) for r in rs[:20]] for h, rs in notes.items()}
    by_hospital["hospital_3"][1]["note_id"] = by_hospital["hospital_3"][0]["note_id"]
    table = note_table(by_hospital, min_words=20, max_words=600)
    outcome = run_checks(table_checks(table, hospitals=HOSPITALS, min_notes=5), tmp_path)
    assert not outcome.success
    assert "unique" in format_failures(outcome.failures).lower()


def test_user_notes_from_txt_and_jsonl_folders(tmp_path: Path) -> None:
    (tmp_path / "north").mkdir()
    (tmp_path / "north" / "dc-001.txt").write_text(
        "Note type: discharge_summary\nSpecialty: cardiology\nChest pain resolved.\n"
    )
    (tmp_path / "north" / "free.txt").write_text("No header at all.\n")
    (tmp_path / "south").mkdir()
    (tmp_path / "south" / "export.jsonl").write_text(
        json.dumps({"note_id": "s1", "text": "Plan: discharge.", "patient_id": "p9"}) + "\n"
    )
    notes = read_user_notes(tmp_path)
    assert list(notes) == ["north", "south"]
    first, second = notes["north"]
    assert (first["note_id"], first["note_type"], first["specialty"]) == (
        "dc-001",
        "discharge_summary",
        "cardiology",
    )
    assert first["text"] == "Chest pain resolved." and first["hospital"] == "north"
    assert second["note_type"] == "unknown" and second["patient_id"] == "free"
    assert notes["south"][0]["patient_id"] == "p9" and notes["south"][0]["hospital"] == "south"


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: (p / "only").mkdir(), "no .txt or .jsonl"),
        (lambda p: None, "found 0 hospital folder"),
        (
            lambda p: ((p / "a").mkdir(), (p / "a" / "x.jsonl").write_text('{"text": "t"}\n')),
            r"x.jsonl:1: missing key\(s\) \['note_id'\]",
        ),
        (
            lambda p: ((p / "a").mkdir(), (p / "a" / "x.jsonl").write_text("{oops\n")),
            "x.jsonl:1: not valid JSON",
        ),
        (
            lambda p: ((p / "a").mkdir(), (p / "a" / "x.txt").write_bytes(b"\xff\xfe bad")),
            "notes must be UTF-8",
        ),
    ],
)
def test_user_notes_errors_name_the_file(setup, match, tmp_path: Path) -> None:
    setup(tmp_path)
    with pytest.raises(DataError, match=match):
        read_user_notes(tmp_path)


def test_examples_per_unit_is_the_most_notes_one_patient_has(tmp_path: Path) -> None:
    """The group size of the per-patient guarantee: p1 wrote 3 of the 5 training notes."""
    from privfed.config import config_from_dict
    from privfed.tasks import get_task
    from privfed.tasks.notes.layout import write_notes
    from tests.conftest import raw_params

    # Prepare: a training split with known patient ids, and a val split the count must ignore
    def note(note_id: str, patient: str) -> dict:
        return {"note_id": note_id, "patient_id": patient, "hospital": "h", "text": "x y z"}

    train, val = tmp_path / "h" / "train", tmp_path / "h" / "val"
    patients = ["p1", "p2", "p1", "p3", "p1"]
    write_notes([note(f"n{i}", p) for i, p in enumerate(patients)], train / "notes.jsonl")
    write_notes([note(f"v{i}", "p9") for i in range(4)], val / "notes.jsonl")
    task = get_task("notes", config_from_dict(raw_params(base={"task": "notes"})))
    # Execute / Assert
    assert task.examples_per_unit([train]) == 3
    assert task.examples_per_unit([val]) == 4
    assert task.examples_per_unit([train, val]) == 4  # p9 has its 4 only in val
    with pytest.raises(DataError, match="cannot read"):
        task.examples_per_unit([tmp_path / "h" / "test"])
    # a task whose example is its patient counts nothing
    assert (
        get_task("readmission", config_from_dict(raw_params())).examples_per_unit([train]) is None
    )
