"""Task ``segmentation`` through every stage: `dvc repro` with ``base.task: segmentation`` (tiny).

Real processes throughout: a SuperLink and three SuperNodes for the federated runs (with and
without DP-SGD), a real MLflow server for the registry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration

HOSPITALS = {"hospital_1", "hospital_2", "hospital_3"}


def _json(project: Path, rel: str) -> dict:
    return json.loads((project / rel).read_text())


def test_segmentation_dvc_repro_end_to_end(project: Path, mlflow_server: str) -> None:
    # Prepare
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    set_params(
        project,
        {
            "base.task": "segmentation",
            "register_model.model_name": "privfed-segmentation",
            # two rounds on a few tiny volumes learn little: the gate is not under test here
            "profiles.tiny.register_model.min_ratio_to_central": 0.0001,
        },
    )

    # Execute
    result = run(["dvc", "repro"], project, env)

    # Assert: partitions hold cases (folders), not rows
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for hospital in HOSPITALS:
        for split in ("train", "val", "test"):
            cases = [p for p in (project / "data/partitions" / hospital / split).iterdir()]
            assert cases and all(p.is_dir() for p in cases), (hospital, split)

    # Every model scored with finite Dice on the pooled test set and per hospital
    evaluation = _json(project, "metrics/evaluation.json")
    assert evaluation["summary"]["primary_metric"] == "dice_mean"
    models = evaluation["models"]
    trained = {"centralized", "federated", "federated_dp"} | {f"local:{h}" for h in HOSPITALS}
    # every run starts from the public UNet, scored beside them (ε 0, no hospital's scans)
    assert set(models) == trained | {"public_only"}
    for name, scores in models.items():
        for key in ("dice_tc", "dice_wt", "dice_et", "dice_mean", "loss"):
            value = scores["pooled"][key]
            assert math.isfinite(value) and (key == "loss" or 0.0 <= value <= 1.0), (name, key)
        if name in trained:  # the public model trained on no member: nothing to audit
            audit = scores["membership_audit"]  # per-case losses on whole volumes
            assert 0.0 <= audit["loss_threshold_auroc"] <= 1.0, name
    for key in ("centralized", "local_mean", "federated", "federated_dp"):
        assert math.isfinite(evaluation["summary"][key]), key
    comparison = _json(project, "reports/evaluation/comparison.json")
    assert set(comparison["federated"]["per_hospital"]) == HOSPITALS
    assert comparison["public_only"]["epsilon"] == 0.0
    assert not (project / "reports/evaluation/confusion.json").exists()  # not a classifier

    # The report shows two test cases of the federated model (PNG overlays)
    figures = sorted((project / "reports/evaluation/figures").glob("*.png"))
    assert len(figures) == 2 and all(p.stat().st_size > 5000 for p in figures)
    report = (project / "reports/evaluation/comparison.md").read_text()
    assert all(f"figures/{p.name}" in report for p in figures)

    # Real federation: both runs completed their rounds at all three hospitals
    rounds = _json(project, "models/federated/rounds.json")
    for name in ("federated", "federated_dp"):
        assert rounds[name]["rounds_completed"] == 2
        assert set(rounds[name]["rounds"][-1]["val_per_hospital"]) == HOSPITALS

    # DP-SGD on volumes: ε per hospital, within budget
    privacy = _json(project, "metrics/privacy.json")
    assert set(privacy["hospitals"]) == HOSPITALS
    assert 0 < privacy["epsilon"] <= privacy["budget"]

    # Registered, with the segmentation metric in the card
    registration = _json(project, "reports/registration/registration.json")
    assert registration["alias"] == "champion", registration["reasons"]
    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("privfed-segmentation", "champion")
    assert version.version == registration["version"]
    assert "dice_mean" in version.description

    # The segmentation model keys are training params: changing the batch size makes the
    # training stages stale, never the data stages
    set_params(project, {"model.segmentation.batch_size": 3})
    status = run(["dvc", "status", "--json"], project, env)
    stale = set(json.loads(status.stdout))
    assert {"train_centralized", "train_local", "train_federated"} <= stale
    assert not stale & {"generate_data", "ingest_data", "validate_data", "partition_data"}
