"""Task ``extraction`` through every stage (tiny profile), in this process except the federation.

The stages run through their Python front door (the one `dvc repro` and Kubeflow call) to stay
within this task's time budget; the federation is real: a SuperLink and three SuperNodes train
LoRA adapters and heads with Fed-MedLoRA+ weighting. DP-SGD is off here (its Opacus step and the
per-patient count are tests/unit/test_extraction.py's). Registration, the same stage for every
task, is left to the other tasks' end-to-end tests to keep this one short.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord
from flwr.common.serde import array_record_to_proto

from privfed.config import config_from_dict
from privfed.partitions import COHORTS_DIR, hospital_dirs, split_dirs
from privfed.stages import get_stage, run_data_stages, stage_spec
from privfed.tasks import get_task
from tests.conftest import raw_params

pytestmark = pytest.mark.integration

HOSPITALS = {"hospital_1", "hospital_2", "hospital_3"}


def _run(stage: str, cfg, work: Path) -> dict:
    spec = stage_spec(stage)
    return get_stage(stage)(
        cfg,
        {k: work / Path(v).name for k, v in spec.inputs.items()},
        {k: work / Path(v).name for k, v in spec.outputs.items()},
    )


def test_extraction_pipeline_end_to_end(tmp_path: Path) -> None:
    # Prepare: three hospitals + the two evaluation-only cohorts; Fed-MedLoRA+ weighting
    raw = raw_params(
        base={"task": "extraction"},
        train_federated={
            "strategy": "data_aware",
            "data_aware_weighting": "exp_one_minus_loss",
            "startup_timeout_s": 90,
        },
        privacy={"enabled": False},
        evaluate_models={"membership_audit": False},
        register_model={"candidate": "federated", "require_dp": False},
    )
    # one real round keeps the test within its time budget (the tiny profile's key wins)
    raw["profiles"]["tiny"]["train_federated"]["rounds"] = 1
    cfg = config_from_dict(raw)
    work = tmp_path / "work"

    # Execute
    partitions = run_data_stages(cfg, work)
    hospitals = hospital_dirs(partitions)
    for stage in (
        "train_centralized",
        "train_local",
        "train_federated",
        "account_privacy",
        "evaluate_models",
    ):
        _run(stage, cfg, work)

    # Assert: hospitals partitioned by patient; the cohorts beside them, never a hospital
    assert {p.name for p in partitions.iterdir() if p.is_dir()} == HOSPITALS | {COHORTS_DIR}
    assert {p.name for p in (partitions / COHORTS_DIR).iterdir()} == {
        "external_validation",
        "new_site",
    }
    for hospital in HOSPITALS:
        patients = {}
        for split in ("train", "val", "test"):
            lines = (partitions / hospital / split / "notes.jsonl").read_text().splitlines()
            notes = [json.loads(line) for line in lines]
            assert notes and {n["hospital"] for n in notes} == {hospital}
            patients[split] = {n["patient_id"] for n in notes}
        assert not patients["train"] & (patients["val"] | patients["test"]), hospital

    # Real federation, both runs; only adapters, heads and the digest travelled
    rounds = json.loads((work / "federated/rounds.json").read_text())
    assert list(rounds) == ["federated"]
    for name in ("federated",):
        run = rounds[name]
        assert run["rounds_completed"] == 1 and run["strategy"] == "data_aware", name
        checkpoint = torch.load(
            work / f"federated/{name}/checkpoints/round_001.pt", weights_only=True
        )["state_dict"]
        assert all(
            ".lora_" in k
            or k.startswith(("token_head.", "pair_head.", "distance."))
            or k == "base_digest"
            for k in checkpoint
        ), name
        size = array_record_to_proto(ArrayRecord(checkpoint)).ByteSize()
        for row in run["rounds"][1:]:
            assert set(row["train"]) == HOSPITALS
            for sent in row["train"].values():
                assert sent["bytes_update"] == size

    # Every model scored: strict ≤ lenient entity F1, relation F1, per hospital and pooled
    evaluation = json.loads((work / "evaluation.json").read_text())
    summary = evaluation["summary"]
    assert summary["primary_metric"] == "entity_f1_strict"
    names = {"centralized", "federated"} | {f"local:{h}" for h in HOSPITALS}
    assert names <= set(evaluation["models"])
    for name, scores in evaluation["models"].items():
        pooled = scores["pooled"]
        assert 0.0 <= pooled["entity_f1_strict"] <= pooled["entity_f1_lenient"] <= 1.0, name
        assert 0.0 <= pooled["relation_f1"] <= 1.0 and math.isfinite(pooled["loss"]), name
    # training lowered the loss below the untrained model's (F1 levels: benchmarks/extraction.py)
    task = get_task("extraction", cfg)
    untrained = task.evaluate(
        task.initial_model(), task.load_dataset(split_dirs(hospitals, "test"))
    )
    assert evaluation["models"]["centralized"]["pooled"]["loss"] < untrained["loss"]

    # The three settings: in-domain per hospital, external validation, new-site adaptation
    settings = json.loads((work / "evaluation/settings.json").read_text())
    assert set(settings["in_domain"]["federated"]["per_hospital"]) == HOSPITALS
    assert names <= set(settings["external_validation"])
    new_site = settings["new_site"]
    assert 0 < new_site["labelled_notes"] <= 10 and new_site["test_notes"] > 0
    assert set(new_site["models"]) == {
        "federated (no adaptation)",
        "federated + new-site fine-tuning",
        "public encoder + new-site training only",
    }
    assert summary["settings"]["new_site_adapted"] == pytest.approx(
        new_site["models"]["federated + new-site fine-tuning"]["entity_f1_strict"]
    )
    report = (work / "evaluation/comparison.md").read_text()
    for heading in (
        "Per entity type",
        "Per relation type",
        "Extracted notes",
        "External validation",
        "New-site adaptation",
    ):
        assert heading in report, heading
    assert report.count("gold entities exact") == cfg.model.extraction.report_notes
    assert "⟦" in report
