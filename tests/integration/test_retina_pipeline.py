"""Task ``retina`` through every stage: `dvc repro` with ``base.task: retina`` (tiny profile).

Real processes throughout: a SuperLink and three SuperNodes for the federated GAN (with and
without DP-SGD on the discriminator), a real MLflow server for the registry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration

HOSPITALS = {"hospital_1", "hospital_2", "hospital_3"}


def _json(project: Path, rel: str) -> dict:
    return json.loads((project / rel).read_text())


def test_retina_dvc_repro_end_to_end(project: Path, mlflow_server: str) -> None:
    # Prepare
    # one intra-op thread per process: the GAN's small convolutions run several times slower
    # with two threads on two cores that other processes (SuperNodes, a benchmark) share
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server, OMP_NUM_THREADS="1")
    set_params(
        project,
        {
            "base.task": "retina",
            "register_model.model_name": "privfed-retina",
            # two rounds of a GAN on a few 32x32 images learn little: the gate is not under test
            "profiles.tiny.register_model.min_ratio_to_central": 0.0001,
        },
    )

    # Execute
    result = run(["dvc", "repro"], project, env)

    # Assert: partitions are image folders with their labels
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for hospital in HOSPITALS:
        for split in ("train", "val", "test"):
            folder = project / "data/partitions" / hospital / split
            assert (folder / "labels.csv").is_file() and list(folder.glob("*.png")), folder

    # Every model scored: FID (lower is better) the primary metric, the other figures beside
    evaluation = _json(project, "metrics/evaluation.json")
    assert evaluation["summary"]["primary_metric"] == "fid"
    models = evaluation["models"]
    # public_only: the public GAN (CT slices) every model started from
    assert {"public_only", "centralized", "federated", "federated_dp"} | {
        f"local:{h}" for h in HOSPITALS
    } <= set(models)
    for name, scores in models.items():
        pooled = scores["pooled"]
        assert math.isfinite(pooled["fid"]) and pooled["fid"] >= 0, name
        for key in ("realism", "tstr_accuracy", "trtr_accuracy", "precision", "recall"):
            assert 0.0 <= pooled[key] <= 1.0, (name, key)
        assert pooled["nn_ratio"] > 0, name
        if name != "public_only":  # it saw no hospital's image: nothing to audit
            assert 0.0 <= scores["membership_audit"]["loss_threshold_auroc"] <= 1.0, name

    # The report: the retina table (with the memorization check) and a sample grid per model
    report = (project / "reports/evaluation/comparison.md").read_text()
    assert "Generator quality, memorization (retina)" in report
    figures = {p.name for p in (project / "reports/evaluation/figures").glob("*.png")}
    assert {"samples_federated.png", "samples_federated_dp.png", "real_test.png"} <= figures
    assert {f"samples_local_{h}.png" for h in HOSPITALS} <= figures

    # Real federation with DP-SGD on the discriminator: ε per hospital, within budget
    rounds = _json(project, "models/federated/rounds.json")
    for name in ("federated", "federated_dp"):
        assert rounds[name]["rounds_completed"] == 2
        # generator and discriminator loss curves, one point per round
        for row in rounds[name]["rounds"][1:]:
            assert row["losses"]["generator_loss"] > 0, row
            assert row["losses"]["discriminator_loss"] > 0, row
            for hospital in HOSPITALS:
                assert row["train"][hospital]["losses"]["generator_loss"] > 0, (row, hospital)
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if "federated.generator_loss" in r.data.metrics
    ]
    assert runs, "no MLflow run holds the federation's generator loss"
    for hospital in HOSPITALS:
        curve = client.get_metric_history(
            runs[0].info.run_id, f"federated.{hospital}.generator_loss"
        )
        assert [m.step for m in curve] == [1, 2], hospital
    privacy = _json(project, "metrics/privacy.json")
    assert set(privacy["hospitals"]) == HOSPITALS
    assert 0 < privacy["epsilon"] <= privacy["budget"]

    # Registered: the generator alone (the discriminator saw real images), FID in the card
    registration = _json(project, "reports/registration/registration.json")
    assert registration["alias"] == "champion", registration["reasons"]
    version = MlflowClient(tracking_uri=mlflow_server).get_model_version_by_alias(
        "privfed-retina", "champion"
    )
    assert "fid" in version.description
    assert (
        "This version, a `Generator`"
        in (project / "reports/registration/model_card.md").read_text()
    )
    # set_tracking_uri also sets MLFLOW_TRACKING_URI: unset both after, or every later test
    # of this worker would talk to this test's (stopped) server
    mlflow.set_tracking_uri(mlflow_server)
    try:
        generator = mlflow.pytorch.load_model(f"models:/privfed-retina/{version.version}")
    finally:
        mlflow.set_tracking_uri(None)
    assert type(generator).__name__ == "Generator"
    assert not any("discriminator" in name for name, _ in generator.named_modules())
