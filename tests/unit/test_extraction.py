"""Task ``extraction``: generator and annotations, BRAT reader errors, metrics by hand, model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from privfed.config import config_from_dict
from privfed.io import DataError
from privfed.tasks import get_task
from privfed.tasks.extraction.brat import read_brat_folder, read_brat_note, write_brat_folder
from privfed.tasks.extraction.checks import annotation_problems
from privfed.tasks.extraction.dataset import (
    LABEL_ID,
    candidate_pairs,
    decode_bio,
    gold,
    token_tags,
    word_spans,
)
from privfed.tasks.extraction.generate import (
    EXTERNAL,
    NEW_SITE,
    cohort_notes,
    hospital_style,
    site_notes,
)
from privfed.tasks.extraction.metrics import entity_scores, relation_scores
from privfed.tasks.extraction.schema import ENTITY_TYPES, RELATION_OF, Entity, Relation
from tests.conftest import raw_params

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def sites() -> dict[str, list[dict]]:
    return site_notes(HOSPITALS, seed=7, notes_per_hospital=30, external_notes=12, new_site_notes=9)


def test_generated_annotations_fit_their_text(sites: dict[str, list[dict]]) -> None:
    # Assert: five cohorts of the asked sizes; every span inside its note, typed, and every
    # relation from a concept to a modifier of the kind it takes
    assert list(sites) == [*HOSPITALS, EXTERNAL, NEW_SITE]
    assert [len(sites[s]) for s in sites] == [30, 30, 30, 12, 9]
    kinds = set()
    for records in sites.values():
        for r in records:
            assert annotation_problems(r) == [], r["note_id"]
            for e in r["entities"]:
                covered = r["text"][e["start"] : e["end"]]
                assert covered == covered.strip() and covered, (r["note_id"], e)
                kinds.add(e["type"])
            by_id = {e["id"]: e for e in r["entities"]}
            for rel in r["relations"]:
                head, tail = by_id[rel["head"]], by_id[rel["tail"]]
                assert RELATION_OF[tail["type"]] == (head["type"], rel["type"])
            # every relation is among the candidates the model scores (same sentence)
            entities, relations = gold(r)
            pairs = set(candidate_pairs(entities, r["text"]))
            assert {(x.head, x.tail) for x in relations} <= pairs, r["note_id"]
    assert kinds == set(ENTITY_TYPES)
    # seeded: the same seed gives the same notes, another seed others
    again = cohort_notes("hospital_1", 30, seed=7, stream=0, style=hospital_style(0))
    assert again == sites["hospital_1"]
    assert cohort_notes("hospital_1", 30, seed=8, stream=0, style=hospital_style(0)) != again


def test_hospitals_write_differently(sites: dict[str, list[dict]]) -> None:
    # non-IID: headers and drug phrasing differ by hospital
    text = {h: " ".join(r["text"] for r in sites[h]) for h in HOSPITALS}
    assert "HISTORY OF PRESENT ILLNESS:" in text["hospital_1"]
    assert "HPI:" in text["hospital_3"] and "HPI:" not in text["hospital_1"]
    long_route = {h: text[h].count("by mouth") + text[h].count("intravenously") for h in HOSPITALS}
    assert long_route["hospital_3"] > 3 * max(long_route["hospital_1"], long_route["hospital_2"])
    # patients with several notes exist (per-patient DP has something to count)
    per_patient = {}
    for r in sites["hospital_1"]:
        per_patient[r["patient_id"]] = per_patient.get(r["patient_id"], 0) + 1
    assert max(per_patient.values()) > 1


def test_brat_round_trip(sites: dict[str, list[dict]], tmp_path: Path) -> None:
    # Execute: write BRAT standoff, read it back
    write_brat_folder(sites["hospital_2"], tmp_path / "hospital_2")
    back = read_brat_folder(tmp_path / "hospital_2", hospital="hospital_2")
    # Assert: the same notes, spans, relations and patients
    assert len(back) == len(sites["hospital_2"])
    for a, b in zip(sorted(back, key=lambda r: r["note_id"]), sites["hospital_2"], strict=True):
        assert (a["note_id"], a["patient_id"], a["text"]) == (
            b["note_id"],
            b["patient_id"],
            b["text"],
        )
        assert gold(a) == gold(b)


def _note(folder: Path, text: str, ann: str, name: str = "n1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    (folder / f"{name}.ann").write_text(ann, encoding="utf-8")
    return folder / f"{name}.txt"


TEXT = "Denies fever but reports severe headache."


@pytest.mark.parametrize(
    ("ann", "match"),
    [
        # covered text differs from the .txt at that offset
        ("T1\tPROBLEM 7 12\tfevers\n", r"n1\.ann:1: entity T1 at offset 7: .*'fevers'.*'fever'"),
        # span past the end of the text
        ("T1\tPROBLEM 30 99\theadache\n", r"n1\.ann:1: entity T1 span 30-99 is outside n1\.txt"),
        ("T1\tDISEASE 7 12\tfever\n", r"n1\.ann:1: entity T1 has type 'DISEASE'"),
        ("T1\tPROBLEM 7 12;13 16\tfever but\n", r"n1\.ann:1: .*discontinuous"),
        # a relation must link a problem to its negation, not the other way round
        (
            "T1\tPROBLEM 7 12\tfever\nT2\tNEGATION 0 6\tDenies\nR1\tnegation Arg1:T2 Arg2:T1\n",
            r"n1\.ann:3: relation R1 \(negation\) must link a PROBLEM .*NEGATION at offset 0",
        ),
        ("T1\tPROBLEM 7 12\tfever\nR1\tnegation Arg1:T1 Arg2:T9\n", r"n1\.ann:2: .*'T9'"),
    ],
)
def test_brat_errors_name_file_line_and_offset(tmp_path: Path, ann: str, match: str) -> None:
    path = _note(tmp_path / "h", TEXT, ann)
    with pytest.raises(DataError, match=match):
        read_brat_note(path)


def test_brat_reads_a_good_note_and_needs_the_ann(tmp_path: Path) -> None:
    ann = (
        "T1\tproblem 7 12\tfever\nT2\tNEGATION 0 6\tDenies\nT3\tPROBLEM 32 40\theadache\n"
        "T4\tSEVERITY 25 31\tsevere\nR1\tnegation Arg1:T1 Arg2:T2\nR2\tseverity Arg1:T3 Arg2:T4\n"
        "#1\tAnnotatorNotes T1\tignored\n"
    )
    note = read_brat_note(_note(tmp_path / "h", TEXT, ann))
    entities, relations = gold(note)
    assert Entity(7, 12, "PROBLEM") in entities  # type is case-insensitive
    assert relations == [
        Relation("negation", Entity(7, 12, "PROBLEM"), Entity(0, 6, "NEGATION")),
        Relation("severity", Entity(32, 40, "PROBLEM"), Entity(25, 31, "SEVERITY")),
    ]
    (tmp_path / "h" / "n1.ann").unlink()
    with pytest.raises(DataError, match=r"n1\.txt: no annotation file n1\.ann"):
        read_brat_note(tmp_path / "h" / "n1.txt")


def test_bio_tags_and_decoding_by_hand() -> None:
    # Prepare: "[CLS] denies fe ##ver [SEP]" over "Denies fever"
    offsets = [(0, 0), (0, 6), (7, 9), (9, 12), (0, 0)]
    entities = [Entity(0, 6, "NEGATION"), Entity(7, 12, "PROBLEM")]
    # Execute
    tags = token_tags(offsets, entities)
    # Assert: special tokens ignored; B on the first sub-word, I on the next
    assert tags == [
        -100,
        LABEL_ID["B-NEGATION"],
        LABEL_ID["B-PROBLEM"],
        LABEL_ID["I-PROBLEM"],
        -100,
    ]
    assert decode_bio(tags, offsets) == entities
    # an I- that continues nothing starts an entity; a type change splits
    lone = [0, LABEL_ID["I-PROBLEM"], LABEL_ID["I-DRUG"], LABEL_ID["I-DRUG"], 0]
    assert decode_bio(lone, offsets) == [Entity(0, 6, "PROBLEM"), Entity(7, 12, "DRUG")]
    # word level: "fe" B-PROBLEM, "##ver" O -> the word takes its first sub-word's tag
    words = word_spans(offsets, [None, 0, 1, 1, None])
    assert words == [(0, 6, 1), (7, 12, 2)]
    cut = [-100, 0, LABEL_ID["B-PROBLEM"], 0, -100]
    assert decode_bio(cut, offsets) == [Entity(7, 9, "PROBLEM")]
    assert decode_bio(cut, offsets, words) == [Entity(7, 12, "PROBLEM")]


def test_entity_and_relation_f1_by_hand() -> None:
    # Prepare: gold: fever (PROBLEM 7-12), severe (SEVERITY 25-31), headache (PROBLEM 32-40)
    fever, severe, headache = (
        Entity(7, 12, "PROBLEM"),
        Entity(25, 31, "SEVERITY"),
        Entity(32, 40, "PROBLEM"),
    )
    gold_doc = [fever, severe, headache]
    # predicted: fever exact; "severe head" (25-36) as SEVERITY overlaps severe; headache missed;
    # spurious DRUG 0-6
    pred_doc = [fever, Entity(25, 36, "SEVERITY"), Entity(0, 6, "DRUG")]
    # Execute
    scores = entity_scores([gold_doc], [pred_doc])
    # Assert: strict: 1 correct of 3 predicted and 3 gold -> P = R = F1 = 1/3
    assert scores["entity_f1_strict"] == pytest.approx(1 / 3)
    # lenient: fever and the overlapping severity count -> P = R = 2/3
    assert scores["entity_f1_lenient"] == pytest.approx(2 / 3)
    assert scores["entity_f1_strict_SEVERITY"] == 0.0
    assert scores["entity_f1_lenient_SEVERITY"] == 1.0
    # PROBLEM strict: 1 correct, 0 spurious, 1 missed -> P 1, R 1/2, F1 2/3
    assert scores["entity_f1_strict_PROBLEM"] == pytest.approx(2 / 3)
    assert scores["support_PROBLEM"] == 2.0
    # touching spans are not overlapping: 12-16 next to 7-12
    touching = entity_scores([[fever]], [[Entity(12, 16, "PROBLEM")]])
    assert touching["entity_f1_lenient"] == 0.0
    # Relations: gold severity(headache, severe), negation(fever, NEG 0-6)
    neg = Entity(0, 6, "NEGATION")
    gold_rel = [Relation("severity", headache, severe), Relation("negation", fever, neg)]
    pred_rel = [Relation("negation", fever, neg), Relation("severity", fever, severe)]
    rel = relation_scores([gold_rel], [pred_rel])
    # tp 1 (negation), fp 1, fn 1 -> 0.5; negation F1 1, severity F1 0
    assert rel["relation_f1"] == pytest.approx(0.5)
    assert rel["relation_f1_negation"] == 1.0 and rel["relation_f1_severity"] == 0.0


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory):
    raw = raw_params(base={"task": "extraction", "seed": 3})
    return get_task("extraction", config_from_dict(raw))


def test_lora_sends_adapters_and_heads_only_and_dp_counts_patients(task, sites, tmp_path) -> None:
    # Prepare: a few hospital_1 notes as a partition split
    from privfed.tasks.extraction.layout import write_notes
    from privfed.training import DPSettings, FitPlan

    write_notes(sites["hospital_1"][:12], tmp_path / "train" / "notes.jsonl")
    dataset = task.load_dataset([tmp_path / "train"])
    lora = task.build_model()
    full = task.build_model()
    from privfed.tasks.extraction.model import build_model

    full = build_model(task.cfg.model.extraction, task.public(), mode="full")
    # Assert: LoRA's state is adapters, heads and the base digest; far fewer values than full
    names = set(lora.state_dict())
    assert names and all(
        ".lora_" in n
        or n.startswith(("token_head.", "pair_head.", "distance."))
        or n == "base_digest"
        for n in names
    )
    # FFA-LoRA (the default): A stays at its seeded init, so only B travels
    assert task.cfg.model.extraction.lora_freeze_a
    assert any(".lora_B." in n for n in names) and "token_head.weight" in names
    assert not any(".lora_A." in n for n in names)
    sent = sum(t.numel() for t in lora.state_dict().values())
    assert sum(t.numel() for t in full.state_dict().values()) > 10 * sent
    # a state from another mode is refused by name
    with pytest.raises(RuntimeError, match="state mismatch"):
        lora.load_state_dict(full.state_dict())
    # the most notes of one patient in the split (group privacy's k)
    counts: dict[str, int] = {}
    for r in sites["hospital_1"][:12]:
        counts[r["patient_id"]] = counts.get(r["patient_id"], 0) + 1
    assert task.examples_per_unit([tmp_path / "train"]) == max(counts.values())
    # Execute: one DP-SGD epoch (Opacus per-sample gradients through BERT + LoRA + heads)
    before = {k: v.clone() for k, v in lora.state_dict().items()}
    result = task.fit(
        lora,
        dataset,
        FitPlan(
            epochs=1, batch_size=4, lr=0.01, dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
        ),
    )
    # Assert: steps accounted, adapters moved, the frozen base untouched (still not sent)
    assert result.dp_steps() >= 1 and np.isfinite(result.train_loss)
    after = lora.state_dict()
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before if ".lora_B." in k)
    metrics = task.evaluate(lora, dataset)
    assert 0.0 <= metrics["entity_f1_strict"] <= metrics["entity_f1_lenient"] <= 1.0
    assert metrics["n"] == 12


def _deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each LoRA layer's update of its frozen weight, scaling x B @ A."""
    return {
        name: module.get_delta_weight("default")
        for name, module in model.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A")
    }


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``model`` with every parameter it sends moved at random (as after local training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator))
    return model.state_dict()


@pytest.mark.parametrize("freeze_a", [True, False])
def test_ffa_lora_makes_fedavg_of_adapters_the_mean_update(task, freeze_a: bool) -> None:
    # Prepare: two hospitals' models after different local training
    from privfed.tasks.extraction.model import build_model

    settings = task.cfg.model.extraction.model_copy(update={"lora_freeze_a": freeze_a})
    hospitals = [build_model(settings, task.public()) for _ in range(2)]
    states = [_perturbed(m, seed) for seed, m in enumerate(hospitals)]
    # Execute: FedAvg (equal weights) of what they send, loaded into a fresh model
    merged = build_model(settings, task.public())
    merged.load_state_dict({k: (states[0][k] + states[1][k]) / 2 for k in states[0]})
    # Assert: with A frozen the merged update is exactly the hospitals' mean update; with A
    # trained (plain LoRA) the mean of B times the mean of A is not
    deltas = [_deltas(m) for m in hospitals]
    mean = {k: (deltas[0][k] + deltas[1][k]) / 2 for k in deltas[0]}
    got = _deltas(merged)
    assert len(got) == settings.layers * len(settings.lora_targets)
    exact = all(torch.allclose(got[k], mean[k], atol=1e-5) for k in got)
    assert exact is freeze_a
