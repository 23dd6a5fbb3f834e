"""Task ``notes`` through every stage: `dvc repro` with ``base.task: notes`` (tiny, LoRA).

Real processes throughout: a SuperLink and three SuperNodes for the federated runs (with and
without DP-SGD), a real MLflow server for the registry. The public tokenizer and base are
built once for the test session (``PRIVFED_CACHE_DIR``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord
from flwr.common.serde import array_record_to_proto
from mlflow import MlflowClient

from privfed.tasks.notes.task import PUBLIC_BASE
from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration

HOSPITALS = {"hospital_1", "hospital_2", "hospital_3"}


def _json(project: Path, rel: str) -> dict:
    return json.loads((project / rel).read_text())


def test_notes_dvc_repro_end_to_end(project: Path, mlflow_server: str) -> None:
    # Prepare
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    set_params(
        project,
        {
            "base.task": "notes",
            "register_model.model_name": "privfed-notes",
            # two rounds of a tiny GPT-2 learn little: the gate is not under test here
            "profiles.tiny.register_model.min_ratio_to_central": 0.0001,
        },
    )

    # Execute
    result = run(["dvc", "repro"], project, env)

    # Assert: partitions hold each hospital's notes per split, no patient in two splits
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for hospital in HOSPITALS:
        patients = {}
        for split in ("train", "val", "test"):
            lines = (project / "data/partitions" / hospital / split / "notes.jsonl").read_text()
            notes = [json.loads(line) for line in lines.splitlines()]
            assert notes and {n["hospital"] for n in notes} == {hospital}, (hospital, split)
            patients[split] = {n["patient_id"] for n in notes}
        assert not patients["train"] & (patients["val"] | patients["test"]), hospital

    # Every model scored: perplexity (lower is better), BLEU and ROUGE-L, pooled and per hospital
    evaluation = _json(project, "metrics/evaluation.json")
    summary = evaluation["summary"]
    assert summary["primary_metric"] == "perplexity"
    models = evaluation["models"]
    assert {"centralized", "federated", "federated_dp"} | {f"local:{h}" for h in HOSPITALS} <= set(
        models
    )
    for name, scores in models.items():
        pooled = scores["pooled"]
        assert 1.0 < pooled["perplexity"] < 1e4, name
        assert pooled["perplexity"] == pytest.approx(math.exp(pooled["loss"])), name
        assert 0.0 <= pooled["bleu"] <= 100.0 and 0.0 <= pooled["rouge_l"] <= 1.0, name
        if name != PUBLIC_BASE:  # the public base never saw a hospital's note: no audit
            assert 0.0 <= scores["membership_audit"]["loss_threshold_auroc"] <= 1.0, name
    # lower is better: the ratio to centralized is centralized / federated
    assert summary["federated_to_central"] == pytest.approx(
        summary["centralized"] / summary["federated"]
    )
    comparison = _json(project, "reports/evaluation/comparison.json")
    assert set(comparison["federated"]["per_hospital"]) == HOSPITALS
    # The public base is scored beside them (what fine-tuning on the notes added), at epsilon 0
    assert "membership_audit" not in models[PUBLIC_BASE]
    assert comparison[PUBLIC_BASE]["epsilon"] == 0.0
    assert models["centralized"]["pooled"]["loss"] < models[PUBLIC_BASE]["pooled"]["loss"]

    # The report holds 5 sample generations of every model, to read
    report = (project / "reports/evaluation/comparison.md").read_text()
    assert "## Sample generations" in report
    for name in models:
        section = report.split(f"### {name}\n", 1)[1].split("###", 1)[0]
        assert section.count("generated: `") == 5, name

    # LoRA: only adapter tensors (and the base digest) travelled; the bytes counted per round
    # are the serialized size of exactly those arrays
    rounds = _json(project, "models/federated/rounds.json")
    train_metrics = _json(project, "metrics/train_federated.json")
    for name in ("federated", "federated_dp"):
        assert rounds[name]["rounds_completed"] == 2
        checkpoint = torch.load(
            project / f"models/federated/{name}/checkpoints/round_001.pt", weights_only=True
        )["state_dict"]
        adapters = [k for k in checkpoint if k != "base_digest"]
        assert adapters and all(".lora_A." in k or ".lora_B." in k for k in adapters), name
        size = array_record_to_proto(ArrayRecord(checkpoint)).ByteSize()
        for row in rounds[name]["rounds"][1:]:
            for hospital, sent in row["train"].items():
                assert sent["bytes_update"] == size, (name, hospital)
                assert sent["bytes_sent"] > sent["bytes_update"], (name, hospital)
        assert train_metrics["runs"][name]["bytes_update_per_hospital_round"] == size

    # DP-SGD on notes: ε per hospital within budget
    privacy = _json(project, "metrics/privacy.json")
    assert set(privacy["hospitals"]) == HOSPITALS
    assert 0 < privacy["epsilon"] <= privacy["budget"]

    # Registered, with the notes metric in the card
    registration = _json(project, "reports/registration/registration.json")
    assert registration["alias"] == "champion", registration["reasons"]
    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("privfed-notes", "champion")
    assert version.version == registration["version"]
    assert "perplexity" in version.description

    # Model keys are training params: switching to full fine-tuning makes the training stages
    # stale, never the data stages
    set_params(project, {"model.notes.mode": "full"})
    status = run(["dvc", "status", "--json"], project, env)
    stale = set(json.loads(status.stdout))
    assert {"train_centralized", "train_local", "train_federated"} <= stale
    assert not stale & {"generate_data", "ingest_data", "validate_data", "partition_data"}
