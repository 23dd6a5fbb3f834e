"""Synthetic clinical notes from a seeded grammar: per hospital, and a public corpus.

A note is sections (chief complaint, history, exam / findings, assessment, plan; radiology
reports have technique, findings, impression) whose sentences come from alternative phrasings
with slots: diagnoses, medications with doses and routes, vitals, labs with units, imaging
findings, drawn per specialty. Hospitals differ the way real ones do (non-IID): specialty mix,
note-type mix, header style, abbreviations, plan layout and length. The public corpus is the
same grammar written by many authors (every specialty and note type alike; each author with
habits drawn at random from the range the hospitals span) on its own seed stream: every
hospital may see it, and it never reads a hospital's notes. What is private to a hospital is
its mix and its consistent habits, as with real notes, where a public corpus has seen every
style of writing but not one hospital's. Nothing resembling PHI is produced (no names, dates
of birth, phone numbers, record numbers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NOTE_TYPES",
    "SPECIALTIES",
    "HospitalStyle",
    "generate_hospitals",
    "hospital_style",
    "make_note",
    "public_corpus",
]

NOTE_TYPES = ("discharge_summary", "progress_note", "radiology_report")
SPECIALTIES = ("cardiology", "oncology", "neurology", "general_medicine")
#: Seed-stream tag of the public corpus, disjoint from every hospital's ``[seed, index]``.
_PUBLIC_STREAM = 0x9B11C

_DX = {
    "cardiology": [
        "acute decompensated heart failure",
        "atrial fibrillation with rapid ventricular response",
        "non-ST elevation myocardial infarction",
        "unstable angina",
        "hypertensive urgency",
        "symptomatic bradycardia",
        "aortic stenosis",
    ],
    "oncology": [
        "febrile neutropenia",
        "metastatic non-small cell lung cancer",
        "diffuse large B-cell lymphoma",
        "stage III colon adenocarcinoma",
        "chemotherapy-induced nausea",
        "malignant pleural effusion",
        "tumor lysis syndrome",
    ],
    "neurology": [
        "acute ischemic stroke",
        "transient ischemic attack",
        "breakthrough seizure",
        "multiple sclerosis flare",
        "migraine with aura",
        "Guillain-Barre syndrome",
        "subarachnoid hemorrhage",
    ],
    "general_medicine": [
        "community-acquired pneumonia",
        "urinary tract infection",
        "cellulitis of the left leg",
        "diabetic ketoacidosis",
        "acute kidney injury",
        "COPD exacerbation",
        "hyponatremia",
    ],
}
_COMPLAINT = {
    "cardiology": ["chest pain", "shortness of breath", "palpitations", "leg swelling", "syncope"],
    "oncology": ["fever", "fatigue", "nausea and vomiting", "weight loss", "new cough"],
    "neurology": ["left-sided weakness", "slurred speech", "headache", "seizure", "numbness"],
    "general_medicine": ["fever", "cough", "dysuria", "confusion", "abdominal pain"],
}
_MEDS = {
    "cardiology": [
        ("metoprolol tartrate", "25 mg", "PO", "BID"),
        ("furosemide", "40 mg", "IV", "BID"),
        ("apixaban", "5 mg", "PO", "BID"),
        ("atorvastatin", "80 mg", "PO", "daily"),
        ("lisinopril", "10 mg", "PO", "daily"),
        ("aspirin", "81 mg", "PO", "daily"),
    ],
    "oncology": [
        ("ondansetron", "8 mg", "IV", "q8h"),
        ("cefepime", "2 g", "IV", "q8h"),
        ("dexamethasone", "4 mg", "PO", "daily"),
        ("filgrastim", "480 mcg", "SC", "daily"),
        ("allopurinol", "300 mg", "PO", "daily"),
        ("oxycodone", "5 mg", "PO", "q4h PRN"),
    ],
    "neurology": [
        ("levetiracetam", "500 mg", "PO", "BID"),
        ("alteplase", "0.9 mg/kg", "IV", "once"),
        ("clopidogrel", "75 mg", "PO", "daily"),
        ("sumatriptan", "50 mg", "PO", "PRN"),
        ("methylprednisolone", "1 g", "IV", "daily"),
        ("atorvastatin", "40 mg", "PO", "daily"),
    ],
    "general_medicine": [
        ("ceftriaxone", "1 g", "IV", "daily"),
        ("azithromycin", "500 mg", "PO", "daily"),
        ("insulin glargine", "20 units", "SC", "nightly"),
        ("enoxaparin", "40 mg", "SC", "daily"),
        ("acetaminophen", "650 mg", "PO", "q6h PRN"),
        ("albuterol", "2.5 mg", "nebulized", "q4h"),
    ],
}
_LABS = {
    "cardiology": [("troponin", 0.01, 2.5, "ng/mL"), ("BNP", 80, 2400, "pg/mL")],
    "oncology": [("WBC", 0.3, 14.0, "K/uL"), ("ANC", 100, 4000, "/uL")],
    "neurology": [("glucose", 70, 240, "mg/dL"), ("INR", 0.9, 1.6, "")],
    "general_medicine": [("lactate", 0.8, 4.5, "mmol/L"), ("procalcitonin", 0.05, 6.0, "ng/mL")],
}
_COMMON_LABS = [
    ("sodium", 124, 146, "mmol/L"),
    ("potassium", 3.1, 5.6, "mmol/L"),
    ("creatinine", 0.6, 3.2, "mg/dL"),
    ("hemoglobin", 7.5, 15.5, "g/dL"),
]
_IMAGING = {
    "cardiology": [
        ("chest radiograph", "mild pulmonary vascular congestion", "small bilateral effusions"),
        ("echocardiogram", "ejection fraction of 35 percent", "moderate mitral regurgitation"),
        ("CT angiography of the chest", "no pulmonary embolism", "coronary calcification"),
    ],
    "oncology": [
        ("CT chest abdomen pelvis", "a 3.2 cm right upper lobe mass", "new hepatic lesions"),
        ("PET-CT", "FDG-avid mediastinal nodes", "no new osseous lesions"),
        ("chest radiograph", "a moderate right pleural effusion", "no pneumothorax"),
    ],
    "neurology": [
        ("MRI brain", "restricted diffusion in the left MCA territory", "no hemorrhage"),
        (
            "CT head without contrast",
            "no acute intracranial hemorrhage",
            "chronic small vessel change",
        ),
        ("CT angiography of the head and neck", "no large vessel occlusion", "mild carotid plaque"),
    ],
    "general_medicine": [
        ("chest radiograph", "right lower lobe consolidation", "no effusion"),
        ("renal ultrasound", "no hydronephrosis", "normal renal size"),
        ("CT abdomen", "no acute process", "mild fatty liver"),
    ],
}
_HISTORY = [
    "hypertension",
    "type 2 diabetes",
    "hyperlipidemia",
    "chronic kidney disease stage 3",
    "COPD",
    "obstructive sleep apnea",
    "prior stroke",
    "coronary artery disease",
    "hypothyroidism",
    "atrial fibrillation",
]
_DETAIL = [
    "The patient was seen and examined at the bedside.",
    "Case discussed with the attending physician.",
    "Review of systems is otherwise negative.",
    "The patient lives with family and is independent at baseline.",
    "Nursing notes and overnight events were reviewed.",
    "Will continue to monitor closely.",
]
_ABBREV = {
    "patient": "pt",
    "history": "hx",
    "with": "w/",
    "without": "w/o",
    "shortness of breath": "SOB",
    "follow-up": "f/u",
    "continue": "cont",
    "treatment": "tx",
}


@dataclass(frozen=True)
class HospitalStyle:
    """How one hospital writes: what it treats, which notes, and its documentation habits."""

    specialty_weights: tuple[float, ...]
    type_weights: tuple[float, ...]
    upper_headers: bool
    abbreviate: float
    bullet_plan: bool
    length: float


def hospital_style(index: int) -> HospitalStyle:
    """The style of hospital ``index`` (0-based): a lead specialty and its own habits."""
    lead = index % len(SPECIALTIES[:3])
    weights = [0.1] * len(SPECIALTIES)
    weights[lead] = 0.65
    weights[3] = 0.15
    types = [(0.5, 0.35, 0.15), (0.25, 0.55, 0.2), (0.3, 0.3, 0.4)][index % 3]
    return HospitalStyle(
        specialty_weights=tuple(w / sum(weights) for w in weights),
        type_weights=types,
        upper_headers=index % 2 == 0,
        abbreviate=(0.05, 0.6, 0.3)[index % 3],
        bullet_plan=index % 3 != 1,
        length=(1.0, 0.75, 1.3)[index % 3],
    )


#: Notes per public author: each author writes with one set of habits.
_PUBLIC_NOTES_PER_AUTHOR = 10


def _public_style(rng: np.random.Generator) -> HospitalStyle:
    """One public author's habits: every specialty and note type alike, the rest at random."""
    return HospitalStyle(
        specialty_weights=(0.25, 0.25, 0.25, 0.25),
        type_weights=(0.34, 0.33, 0.33),
        upper_headers=bool(rng.random() < 0.5),
        abbreviate=float(rng.uniform(0.0, 0.7)),
        bullet_plan=bool(rng.random() < 0.5),
        length=float(rng.uniform(0.7, 1.35)),
    )


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _lab(rng: np.random.Generator, lab: tuple[str, float, float, str]) -> str:
    name, lo, hi, unit = lab
    value = rng.uniform(lo, hi)
    shown = f"{value:.2f}" if hi < 10 else f"{value:.0f}"
    return f"{name} {shown} {unit}".strip()


def _vitals(rng: np.random.Generator) -> str:
    sbp, dbp = int(rng.integers(96, 178)), int(rng.integers(54, 102))
    return _pick(
        rng,
        [
            f"BP {sbp}/{dbp}, HR {int(rng.integers(52, 128))}, RR {int(rng.integers(12, 26))}, "
            f"SpO2 {int(rng.integers(88, 100))}% on room air, T {rng.uniform(36.1, 39.4):.1f} C.",
            f"Vitals: temperature {rng.uniform(36.1, 39.4):.1f} C, blood pressure {sbp}/{dbp}, "
            f"heart rate {int(rng.integers(52, 128))}, oxygen saturation "
            f"{int(rng.integers(88, 100))}%.",
            f"Afebrile, BP {sbp}/{dbp}, pulse {int(rng.integers(52, 128))}, saturating "
            f"{int(rng.integers(88, 100))}% on {int(rng.integers(1, 5))} L nasal cannula.",
        ],
    )


def _med(rng: np.random.Generator, specialty: str) -> str:
    name, dose, route, freq = _pick(rng, _MEDS[specialty])
    return f"{name} {dose} {route} {freq}"


def _sections(
    rng: np.random.Generator, specialty: str, note_type: str, style: HospitalStyle
) -> list[tuple[str, list[str]]]:
    age = int(rng.integers(24, 92))
    sex = _pick(rng, ["man", "woman"])
    dx = _pick(rng, _DX[specialty])
    complaint = _pick(rng, _COMPLAINT[specialty])
    hx = list(rng.choice(_HISTORY, size=int(rng.integers(1, 4)), replace=False))
    days = int(rng.integers(1, 10))
    labs = [_lab(rng, lab) for lab in (_LABS[specialty] + _COMMON_LABS)]
    labs = list(rng.choice(labs, size=int(rng.integers(2, 5)), replace=False))
    img = _pick(rng, _IMAGING[specialty])
    meds = list({_med(rng, specialty) for _ in range(int(rng.integers(2, 5)))})
    if note_type == "radiology_report":
        return [
            ("Exam", [f"{img[0]}."]),
            (
                "Indication",
                [f"{age}-year-old {sex} with {complaint}, evaluate for {dx}."],
            ),
            (
                "Technique",
                [
                    _pick(
                        rng,
                        [
                            "Standard protocol without intravenous contrast.",
                            "Images obtained with intravenous contrast per protocol.",
                            "Frontal and lateral views were obtained.",
                        ],
                    )
                ],
            ),
            (
                "Findings",
                [
                    f"There is {img[1]}.",
                    _pick(rng, [f"Also noted is {img[2]}.", f"{img[2].capitalize()}."]),
                    _pick(
                        rng,
                        [
                            "No other acute abnormality.",
                            "Comparison with the prior study shows interval change.",
                            "Osseous structures are unremarkable.",
                        ],
                    ),
                ],
            ),
            (
                "Impression",
                [_pick(rng, [f"Findings consistent with {dx}.", f"{img[1].capitalize()}."])],
            ),
        ]
    history = [
        _pick(
            rng,
            [
                f"{age}-year-old {sex} with a history of {', '.join(hx)} who presents with "
                f"{complaint} for {days} days.",
                f"The patient is a {age}-year-old {sex} with {' and '.join(hx)} admitted with "
                f"{complaint}.",
                f"{age} y/o {sex}, history of {', '.join(hx)}, presenting with {complaint} that "
                f"began {days} days ago.",
            ],
        ),
        _pick(
            rng,
            [
                f"Symptoms worsened despite home {_med(rng, specialty)}.",
                "The patient denies recent travel or sick contacts.",
                f"Initial workup showed {labs[0]}.",
                f"In the emergency department the patient received {_med(rng, specialty)}.",
            ],
        ),
    ]
    exam = [_vitals(rng), f"Labs notable for {', '.join(labs)}."]
    if rng.random() < 0.7:
        exam.append(f"{img[0].capitalize()} showed {img[1]}.")
    assessment = [
        _pick(
            rng,
            [
                f"{dx.capitalize()}, {_pick(rng, ['improving', 'stable', 'worsening'])}.",
                f"Presentation most consistent with {dx}.",
                f"Working diagnosis is {dx}; differential includes {_pick(rng, _DX[specialty])}.",
            ],
        )
    ]
    plan = [f"Continue {m}." for m in meds[:2]] + [
        _pick(
            rng,
            [
                f"Repeat {labs[-1].split(' ')[0]} in the morning.",
                f"Follow-up with {specialty.replace('_', ' ')} clinic in "
                f"{int(rng.integers(1, 4))} weeks.",
                "Monitor on telemetry.",
                "Physical therapy evaluation.",
                "Discussed plan with the patient and family.",
            ],
        )
    ]
    if note_type == "discharge_summary":
        hospital_course = [
            f"Hospital course: treated with {meds[0]} with "
            f"{_pick(rng, ['good', 'partial', 'slow'])} response over {days} days.",
        ]
        return [
            ("Chief complaint", [complaint.capitalize() + "."]),
            ("History of present illness", history + hospital_course),
            ("Findings", exam),
            ("Assessment", assessment),
            ("Discharge plan", plan + [f"Discharge medications include {meds[-1]}."]),
        ]
    return [
        ("Chief complaint", [complaint.capitalize() + "."]),
        ("Interval history", history[1:] if rng.random() < 0.5 else history),
        ("Exam", exam),
        ("Assessment", assessment),
        ("Plan", plan),
    ]


def _abbreviate(text: str, rng: np.random.Generator, share: float) -> str:
    for word, short in _ABBREV.items():
        if word in text and rng.random() < share:
            text = text.replace(word, short)
    return text


def make_note(
    rng: np.random.Generator, *, specialty: str, note_type: str, style: HospitalStyle
) -> str:
    """One note of ``note_type`` in ``specialty``, written in ``style``."""
    parts = []
    for header, sentences in _sections(rng, specialty, note_type, style):
        keep = max(1, round(len(sentences) * min(1.0, style.length * rng.uniform(0.7, 1.2))))
        sentences = sentences[:keep]
        if rng.random() < style.length - 0.8:  # verbose hospitals add detail
            sentences = [*sentences, _pick(rng, _DETAIL)]
        head = f"{header.upper()}:" if style.upper_headers else f"{header} -"
        if header.endswith("plan") or header == "Plan":
            body = (
                "\n".join(f"- {s}" for s in sentences) if style.bullet_plan else " ".join(sentences)
            )
            parts.append(f"{head}\n{body}" if style.bullet_plan else f"{head} {body}")
        else:
            parts.append(f"{head} {' '.join(sentences)}")
    return _abbreviate("\n".join(parts), rng, style.abbreviate)


def _notes(
    rng: np.random.Generator, style: HospitalStyle, n: int, prefix: str, hospital: str
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    patient = 0
    while len(records) < n:
        patient += 1
        specialty = SPECIALTIES[int(rng.choice(len(SPECIALTIES), p=style.specialty_weights))]
        for _ in range(min(int(rng.integers(1, 4)), n - len(records))):
            note_type = NOTE_TYPES[int(rng.choice(len(NOTE_TYPES), p=style.type_weights))]
            records.append(
                {
                    "note_id": f"{prefix}-n{len(records):05d}",
                    "patient_id": f"{prefix}-p{patient:05d}",
                    "hospital": hospital,
                    "note_type": note_type,
                    "specialty": specialty,
                    "text": make_note(rng, specialty=specialty, note_type=note_type, style=style),
                }
            )
    return records


def generate_hospitals(
    hospitals: Sequence[str], out_dir: Path, *, seed: int, notes_per_hospital: int
) -> dict[str, Any]:
    """Write ``out_dir/<hospital>/notes.jsonl``; the same seed writes the same bytes."""
    counts: dict[str, int] = {}
    for index, hospital in enumerate(hospitals):
        rng = np.random.default_rng([seed, index])
        records = _notes(rng, hospital_style(index), notes_per_hospital, hospital, hospital)
        folder = Path(out_dir) / hospital
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "notes.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
        counts[hospital] = len(records)
    return {"counts": {"notes": counts}}


def public_corpus(*, seed: int, n_notes: int) -> list[str]:
    """Public text every hospital may see: many authors' notes and the medical vocabulary."""
    rng = np.random.default_rng([seed, _PUBLIC_STREAM])
    notes: list[str] = []
    while len(notes) < n_notes:
        k = min(_PUBLIC_NOTES_PER_AUTHOR, n_notes - len(notes))
        notes += [r["text"] for r in _notes(rng, _public_style(rng), k, "public", "public")]
    terms = sorted(
        {d for v in _DX.values() for d in v}
        | {" ".join(m) for v in _MEDS.values() for m in v}
        | {f"{lab[0]} {lab[3]}".strip() for v in _LABS.values() for lab in v}
        | set(_HISTORY)
    )
    return notes + terms
