"""Annotated synthetic clinical notes from a seeded grammar: the text and its gold annotations.

Every span is recorded while the note is written (the builder appends text and notes the
offsets of what it just wrote), so annotations and text agree by construction. A note has a
history section (presenting problems with severity, body site and time; negated and uncertain
problems), a past history, and an assessment and plan (tests and their findings, treatments,
drugs with dosage, route and frequency). Sentences mix several concepts and modifiers, so a
modifier's concept must be read from context ("denies fever or cough but reports severe
headache").

Hospitals differ as real ones do (non-IID): specialty mix, header style, abbreviations ("SOB",
"PO BID" or "by mouth twice daily"), how they phrase negation and uncertainty, where a body site
goes. Five cohorts by default: the training hospitals, an external-validation cohort (mixed
styles, every specialty; never trains) and a new site with its own style and few notes. The
public corpus (tokenizer and masked-LM pretraining; text only) is the same grammar written by
many authors with habits drawn at random, on its own seed stream. Nothing resembling PHI is
produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfed.tasks.extraction.schema import RELATION_OF

__all__ = [
    "EXTERNAL",
    "NEW_SITE",
    "SPECIALTIES",
    "Style",
    "cohort_notes",
    "hospital_style",
    "make_note",
    "public_corpus",
    "site_notes",
]

SPECIALTIES = ("cardiology", "oncology", "neurology", "general_medicine")
#: Folder names of the evaluation-only cohorts (synthetic and a user's own data alike).
EXTERNAL = "external_validation"
NEW_SITE = "new_site"
#: Seed-stream tags, disjoint from every hospital's ``[seed, index]``.
_EXTERNAL_STREAM = 0xE7
_NEW_SITE_STREAM = 0x5E
_PUBLIC_STREAM = 0xA11C

_PROBLEMS = {
    "cardiology": [
        ("heart failure", "CHF"),
        ("atrial fibrillation", "AFib"),
        ("chest pain", "CP"),
        ("shortness of breath", "SOB"),
        ("palpitations", None),
        ("syncope", None),
        ("hypertension", "HTN"),
    ],
    "oncology": [
        ("neutropenia", None),
        ("fever", None),
        ("nausea", None),
        ("pleural effusion", None),
        ("lung mass", None),
        ("fatigue", None),
        ("weight loss", None),
    ],
    "neurology": [
        ("stroke", "CVA"),
        ("seizure", "Sz"),
        ("headache", "HA"),
        ("aphasia", None),
        ("transient ischemic attack", "TIA"),
        ("dizziness", None),
        ("tremor", None),
    ],
    "general_medicine": [
        ("pneumonia", "PNA"),
        ("urinary tract infection", "UTI"),
        ("cellulitis", None),
        ("diabetes", "DM"),
        ("acute kidney injury", "AKI"),
        ("cough", None),
        ("abdominal pain", None),
    ],
}
#: Problems that take a body site.
_SITE_PROBLEMS = ("pain", "swelling", "weakness", "numbness", "rash", "tenderness", "edema")
_SITES = (
    "left leg",
    "right arm",
    "lower back",
    "abdomen",
    "right upper quadrant",
    "both ankles",
    "neck",
    "left hand",
    "right shoulder",
)
_SEVERITY = ("mild", "moderate", "severe", "marked", "slight")
_DRUGS = {
    "cardiology": [
        ("metoprolol", ("25 mg", "50 mg"), "PO", ("BID", "daily")),
        ("furosemide", ("40 mg", "20 mg"), "IV", ("BID", "daily")),
        ("apixaban", ("5 mg",), "PO", ("BID",)),
        ("heparin", ("5000 units",), "SC", ("q8h", "q12h")),
        ("atorvastatin", ("80 mg", "40 mg"), "PO", ("nightly",)),
    ],
    "oncology": [
        ("ondansetron", ("8 mg", "4 mg"), "IV", ("q8h", "PRN")),
        ("cefepime", ("2 g",), "IV", ("q8h",)),
        ("dexamethasone", ("4 mg",), "PO", ("daily", "BID")),
        ("filgrastim", ("480 mcg",), "SC", ("daily",)),
        ("oxycodone", ("5 mg", "10 mg"), "PO", ("q4h", "PRN")),
    ],
    "neurology": [
        ("levetiracetam", ("500 mg", "750 mg"), "PO", ("BID",)),
        ("alteplase", ("0.9 mg/kg",), "IV", ("once",)),
        ("clopidogrel", ("75 mg",), "PO", ("daily",)),
        ("sumatriptan", ("50 mg",), "PO", ("PRN",)),
        ("methylprednisolone", ("1 g",), "IV", ("daily",)),
    ],
    "general_medicine": [
        ("ceftriaxone", ("1 g", "2 g"), "IV", ("daily",)),
        ("azithromycin", ("500 mg", "250 mg"), "PO", ("daily",)),
        ("insulin glargine", ("20 units", "10 units"), "SC", ("nightly",)),
        ("enoxaparin", ("40 mg",), "SC", ("daily",)),
        ("acetaminophen", ("650 mg", "1 g"), "PO", ("q6h", "PRN")),
    ],
}
_ROUTE_LONG = {"PO": "by mouth", "IV": "intravenously", "SC": "subcutaneously"}
_FREQ_LONG = {
    "BID": "twice daily",
    "daily": "once daily",
    "q8h": "every 8 hours",
    "q12h": "every 12 hours",
    "q6h": "every 6 hours",
    "q4h": "every 4 hours",
    "nightly": "at bedtime",
    "PRN": "as needed",
    "once": "once",
}
_TESTS = {
    "cardiology": ("echocardiogram", "troponin", "ECG", "chest radiograph", "stress test"),
    "oncology": ("CT chest", "PET-CT", "CBC", "bone marrow biopsy", "tumor markers"),
    "neurology": ("MRI brain", "CT head", "EEG", "lumbar puncture", "carotid ultrasound"),
    "general_medicine": ("urinalysis", "blood cultures", "basic metabolic panel", "lactate", "CBC"),
}
_TREATMENTS = {
    "cardiology": ("cardiac catheterization", "cardioversion", "cardiac rehabilitation"),
    "oncology": ("chemotherapy", "radiation therapy", "thoracentesis", "blood transfusion"),
    "neurology": ("thrombectomy", "physical therapy", "speech therapy", "plasmapheresis"),
    "general_medicine": ("hemodialysis", "wound care", "oxygen therapy", "incision and drainage"),
}
#: Negation cues: (cue, where it stands): before the problems, or after them ("was ruled out").
_NEGATIONS = (
    ("denies", "pre"),
    ("no", "pre"),
    ("negative for", "pre"),
    ("without", "pre"),
    ("no evidence of", "pre"),
    ("was ruled out", "post"),
)
_UNCERTAINTY = ("possible", "likely", "concern for", "cannot exclude", "suspected", "r/o")
_HEADERS = {
    "upper": ("HISTORY OF PRESENT ILLNESS:", "PAST MEDICAL HISTORY:", "ASSESSMENT AND PLAN:"),
    "title": ("History of Present Illness:", "Past Medical History:", "Assessment and Plan:"),
    "short": ("HPI:", "PMH:", "A/P:"),
}


@dataclass(frozen=True)
class Style:
    """How one site writes: what it treats and its documentation habits."""

    specialty_weights: tuple[float, ...]
    headers: str
    abbreviate: float
    negation_weights: tuple[float, ...]
    uncertainty_weights: tuple[float, ...]
    site_first: float
    drug_long: float


def _favour(n: int, favoured: Sequence[int], share: float = 0.8) -> tuple[float, ...]:
    rest = (1.0 - share) / n
    weights = [rest + (share / len(favoured) if i in favoured else 0.0) for i in range(n)]
    return tuple(w / sum(weights) for w in weights)


def hospital_style(index: int) -> Style:
    """Site ``index`` (0-based): a lead specialty and its own habits (cycles past four)."""
    lead = index % len(SPECIALTIES)
    specialty = [0.1] * len(SPECIALTIES)
    specialty[lead] = 0.7
    return Style(
        specialty_weights=tuple(w / sum(specialty) for w in specialty),
        headers=("upper", "title", "short", "title")[index % 4],
        abbreviate=(0.05, 0.75, 0.35, 0.55)[index % 4],
        negation_weights=_favour(len(_NEGATIONS), [(0, 1), (2, 3), (4, 5), (1, 2)][index % 4]),
        uncertainty_weights=_favour(len(_UNCERTAINTY), [(0, 1), (2, 5), (3, 4), (1, 3)][index % 4]),
        site_first=(0.1, 0.85, 0.5, 0.3)[index % 4],
        drug_long=(0.1, 0.05, 0.85, 0.5)[index % 4],
    )


def _random_style(rng: np.random.Generator) -> Style:
    """A public author's habits: every specialty alike, the rest drawn at random."""
    return Style(
        specialty_weights=(0.25,) * 4,
        headers=str(rng.choice(list(_HEADERS))),
        abbreviate=float(rng.uniform(0.0, 0.8)),
        negation_weights=tuple(rng.dirichlet(np.ones(len(_NEGATIONS)))),
        uncertainty_weights=tuple(rng.dirichlet(np.ones(len(_UNCERTAINTY)))),
        site_first=float(rng.uniform(0.0, 1.0)),
        drug_long=float(rng.uniform(0.0, 1.0)),
    )


class _Builder:
    """Text written left to right; :meth:`ent` records the span it appends."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n = 0
        self.entities: list[dict[str, Any]] = []
        self.relations: list[dict[str, Any]] = []

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.n += len(text)

    def ent(self, kind: str, text: str) -> str:
        eid = f"T{len(self.entities) + 1}"
        self.entities.append({"id": eid, "type": kind, "start": self.n, "end": self.n + len(text)})
        self.put(text)
        return eid

    def rel(self, head: str, tail: str) -> None:
        kind = next(e["type"] for e in self.entities if e["id"] == tail)
        self.relations.append({"type": RELATION_OF[kind][1], "head": head, "tail": tail})

    def newline(self, header: str) -> None:
        """End the line (without its trailing blank) and start a section."""
        if self.parts and self.parts[-1].endswith(" "):
            self.parts[-1] = self.parts[-1][:-1]
            self.n -= 1
        self.put("\n" + header + " ")

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _pick(rng: np.random.Generator, items: Sequence[Any], p: Sequence[float] | None = None) -> Any:
    return items[int(rng.choice(len(items), p=p))]


def _problem_name(rng: np.random.Generator, specialty: str, style: Style) -> str:
    full, short = _pick(rng, _PROBLEMS[specialty])
    return short if short and rng.random() < style.abbreviate else full


def _problem(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> str:
    """A problem with optional severity and body site; returns the problem's id."""
    severity = _pick(rng, _SEVERITY) if rng.random() < 0.45 else None
    if rng.random() < 0.35:  # a site-taking symptom
        name, site = _pick(rng, _SITE_PROBLEMS), _pick(rng, _SITES)
        if rng.random() < style.site_first:  # "severe left leg swelling"
            sev = b.ent("SEVERITY", severity) if severity else None
            if sev:
                b.put(" ")
            st = b.ent("BODY_SITE", site)
            b.put(" ")
            pid = b.ent("PROBLEM", name)
        else:  # "severe swelling of the left leg"
            sev = b.ent("SEVERITY", severity) if severity else None
            if sev:
                b.put(" ")
            pid = b.ent("PROBLEM", name)
            b.put(_pick(rng, [" of the ", " in the "]))
            st = b.ent("BODY_SITE", site)
        b.rel(pid, st)
    else:
        sev = b.ent("SEVERITY", severity) if severity else None
        if sev:
            b.put(" ")
        pid = b.ent("PROBLEM", _problem_name(rng, specialty, style))
    if sev:
        b.rel(pid, sev)
    return pid


def _presenting(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    b.put(_pick(rng, ["Pt", "The patient"] if style.abbreviate > 0.5 else ["The patient"]))
    b.put(_pick(rng, [" presents with ", " reports ", " complains of "]))
    first = _problem(b, rng, specialty, style)
    when = rng.random()
    if when < 0.55:
        n = int(rng.integers(2, 10))
        b.put(" ")
        b.rel(
            first,
            b.ent(
                "TEMPORAL",
                _pick(rng, [f"for {n} days", f"for {n} weeks", "since yesterday", f"{n} days ago"]),
            ),
        )
    if rng.random() < 0.5:
        b.put(" and ")
        _problem(b, rng, specialty, style)
    b.put(". ")


def _negation(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    cue, where = _pick(rng, _NEGATIONS, style.negation_weights)
    names = list(
        dict.fromkeys(_problem_name(rng, specialty, style) for _ in range(int(rng.integers(1, 4))))
    )
    if where == "post":
        ids = [b.ent("PROBLEM", names[0])]
        b.put(" ")
        neg = b.ent("NEGATION", cue)
    else:
        neg = b.ent("NEGATION", cue.capitalize())
        b.put(" ")
        ids = []
        for i, name in enumerate(names):
            if i:
                b.put(" or " if i == len(names) - 1 else ", ")
            ids.append(b.ent("PROBLEM", name))
    for pid in ids:
        b.rel(pid, neg)
    if rng.random() < 0.5:  # a positive problem in the same sentence: the cue is not its
        b.put(_pick(rng, [" but reports ", " but has ", "; endorses "]))
        _problem(b, rng, specialty, style)
    b.put(". ")


def _uncertain(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    cue = _pick(rng, _UNCERTAINTY, style.uncertainty_weights)
    b.put(_pick(rng, ["Presentation with ", "Assessment: ", "Findings of "]))
    if rng.random() < 0.5:  # a certain problem first, then the uncertain one
        _problem(b, rng, specialty, style)
        b.put(", ")
    unc = b.ent("UNCERTAINTY", cue)
    b.put(" ")
    b.rel(b.ent("PROBLEM", _problem_name(rng, specialty, style)), unc)
    b.put(". ")


def _history(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    cue = "hx of" if rng.random() < style.abbreviate else "history of"
    lead = _pick(rng, ["Significant for ", "Notable for ", ""])
    b.put(lead)
    temporal = b.ent("TEMPORAL", cue if lead else cue.capitalize())
    b.put(" ")
    other = _pick(rng, [s for s in SPECIALTIES if s != specialty])
    names = list(
        dict.fromkeys(
            _problem_name(rng, _pick(rng, [specialty, other]), style)
            for _ in range(int(rng.integers(1, 4)))
        )
    )
    for i, name in enumerate(names):
        if i:
            b.put(" and " if i == len(names) - 1 else ", ")
        b.rel(b.ent("PROBLEM", name), temporal)
    if rng.random() < 0.4:
        b.put(", ")
        chronic = b.ent("TEMPORAL", "chronic")
        b.put(" ")
        b.rel(b.ent("PROBLEM", _problem_name(rng, specialty, style)), chronic)
    b.put(". ")


def _test(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    test = _pick(rng, _TESTS[specialty])
    kind = rng.random()
    if kind < 0.5:
        b.ent("TEST", test[0].upper() + test[1:] if test[0].islower() else test)
        b.put(_pick(rng, [" showed ", " revealed ", " was consistent with "]))
        _problem(b, rng, specialty, style)
    elif kind < 0.75:
        b.put(_pick(rng, ["Will obtain ", "Ordered ", "Repeat "]))
        b.ent("TEST", test)
    else:
        b.ent("TEST", test[0].upper() + test[1:] if test[0].islower() else test)
        b.put(_pick(rng, [" was unremarkable", " within normal limits"]))
    b.put(". ")


def _treatment(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    b.put(_pick(rng, ["Underwent ", "Plan for ", "Recommend ", "Consider "]))
    b.ent("TREATMENT", _pick(rng, _TREATMENTS[specialty]))
    b.put(". ")


def _drug(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    name, doses, route, freqs = _pick(rng, _DRUGS[specialty])
    long = rng.random() < style.drug_long
    did = b.ent("DRUG", name)
    b.put(" ")
    b.rel(did, b.ent("DOSAGE", _pick(rng, doses)))
    if rng.random() < 0.85:
        b.put(" ")
        b.rel(did, b.ent("ROUTE", _ROUTE_LONG[route] if long else route))
    if rng.random() < 0.85:
        freq = _pick(rng, freqs)
        b.put(" ")
        b.rel(did, b.ent("FREQUENCY", _FREQ_LONG[freq] if long else freq))


def _drugs(b: _Builder, rng: np.random.Generator, specialty: str, style: Style) -> None:
    b.put(_pick(rng, ["Continue ", "Start ", "Started ", "Discharged on "]))
    _drug(b, rng, specialty, style)
    if rng.random() < 0.5:
        b.put(" and ")
        _drug(b, rng, specialty, style)
    b.put(". ")


def make_note(
    rng: np.random.Generator, *, specialty: str, style: Style
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """One note: its text, entities (``id``, ``type``, ``start``, ``end``) and relations."""
    b = _Builder()
    hpi, pmh, plan = _HEADERS[style.headers]
    b.put(hpi + " ")
    _presenting(b, rng, specialty, style)
    _negation(b, rng, specialty, style)
    if rng.random() < 0.5:
        _uncertain(b, rng, specialty, style)
    b.newline(pmh)
    _history(b, rng, specialty, style)
    b.newline(plan)
    for _ in range(int(rng.integers(1, 3))):
        _test(b, rng, specialty, style)
    if rng.random() < 0.5:
        _uncertain(b, rng, specialty, style)
    if rng.random() < 0.6:
        _treatment(b, rng, specialty, style)
    _drugs(b, rng, specialty, style)
    text = b.text.rstrip()
    return text, b.entities, b.relations


def cohort_notes(
    site: str, n_notes: int, *, seed: int, stream: int | Sequence[int], style: Style | None
) -> list[dict[str, Any]]:
    """``n_notes`` annotated notes of ``site``; patients have 1-3 notes each.

    ``style`` None mixes the styles of sites 0-2 note by note, every specialty alike (the
    external-validation cohort: a population no single training hospital resembles).
    """
    rng = np.random.default_rng([seed, *np.atleast_1d(stream).tolist()])
    records: list[dict[str, Any]] = []
    patient = 0
    while len(records) < n_notes:
        patient += 1
        for _ in range(min(int(rng.integers(1, 4)), n_notes - len(records))):
            note_style = style or hospital_style(int(rng.integers(0, 3)))
            weights = (0.25,) * 4 if style is None else note_style.specialty_weights
            specialty = _pick(rng, SPECIALTIES, weights)
            text, entities, relations = make_note(rng, specialty=specialty, style=note_style)
            records.append(
                {
                    "note_id": f"{site}-n{len(records) + 1:05d}",
                    "patient_id": f"{site}-p{patient:05d}",
                    "hospital": site,
                    "specialty": specialty,
                    "text": text,
                    "entities": entities,
                    "relations": relations,
                }
            )
    return records


def site_notes(
    hospitals: Sequence[str],
    *,
    seed: int,
    notes_per_hospital: int,
    external_notes: int,
    new_site_notes: int,
) -> dict[str, list[dict[str, Any]]]:
    """Every cohort's notes: the training hospitals, then :data:`EXTERNAL` and :data:`NEW_SITE`
    (a cohort with 0 notes is left out)."""
    out = {
        h: cohort_notes(h, notes_per_hospital, seed=seed, stream=i, style=hospital_style(i))
        for i, h in enumerate(hospitals)
    }
    if external_notes:
        out[EXTERNAL] = cohort_notes(
            EXTERNAL, external_notes, seed=seed, stream=_EXTERNAL_STREAM, style=None
        )
    if new_site_notes:
        out[NEW_SITE] = cohort_notes(
            NEW_SITE,
            new_site_notes,
            seed=seed,
            stream=_NEW_SITE_STREAM,
            style=hospital_style(len(hospitals)),
        )
    return out


#: Notes per public author: each author writes with one set of habits.
_PUBLIC_NOTES_PER_AUTHOR = 10


def public_corpus(*, seed: int, n_notes: int) -> list[str]:
    """Public note texts (no annotations): many authors, every specialty, own seed stream."""
    rng = np.random.default_rng([seed, _PUBLIC_STREAM])
    texts: list[str] = []
    style = _random_style(rng)
    for i in range(n_notes):
        if i % _PUBLIC_NOTES_PER_AUTHOR == 0:
            style = _random_style(rng)
        text, _, _ = make_note(rng, specialty=_pick(rng, SPECIALTIES), style=style)
        texts.append(text)
    return texts
