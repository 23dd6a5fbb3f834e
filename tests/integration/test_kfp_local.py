"""The Kubeflow DAG end to end through KFP's own local runner (tiny profile, real MLflow server).

``privfed pipeline run-local`` runs every component as a subprocess with
``kfp.local.SubprocessRunner(use_venv=False)``: the same component code a cluster runs, minus the
containers. Kubernetes settings (GPUs, volumes, secrets) are checked on the IR in
tests/components, since the local runner ignores them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from privfed.stages import DEFAULT_PATHS
from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration

#: ``privfed pipeline run-local``'s default ``--out``: apart from ``dvc repro``'s outputs.
LOCAL_OUT = "kfp-local/outputs"


def test_run_local_registers_a_model_with_the_dvc_layout(project: Path, mlflow_server: str) -> None:
    """One local run serves two checks. The DAG writes `dvc repro`'s layout and registers in
    the real MLflow server. And a config the DVC door accepts runs on Kubeflow too: SCAFFOLD is
    valid only with privacy.enabled false *and* register_model.candidate federated.
    train-federated once received only the sections dvc.yaml lists for it, so it validated
    SCAFFOLD against the default (DP) candidate and refused to start; every component now gets
    the whole config. (The DP run through the components: `make container-test`.)"""
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    set_params(
        project,
        {
            "profiles.tiny.register_model.min_ratio_to_central": 0.01,
            "train_federated.strategy": "scaffold",
            "privacy.enabled": False,
            "register_model.candidate": "federated",
            "register_model.require_dp": False,  # a model without DP may be champion here
        },
    )

    # Execute
    result = run(["privfed", "pipeline", "run-local", "--root", "kfp-root"], project, env)

    # Assert: success, and every output a `dvc repro` writes, in the same layout, in a folder of
    # its own: `dvc repro`'s outputs are not written over
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = project / LOCAL_OUT
    for stage, paths in DEFAULT_PATHS.items():
        for name, rel in paths["outputs"].items():
            assert (out / rel).exists(), f"{stage} output {name} missing at {rel}"
    assert not (project / "models/federated").exists()
    assert not (project / "data/partitions").exists()
    assert f"the DVC layout in {out}" in " ".join((result.stdout + result.stderr).split())
    # the DAG ran to registration with one federated run, SCAFFOLD's, and no DP run
    rounds = json.loads((out / "models/federated/rounds.json").read_text())
    assert set(rounds) == {"federated"}
    assert rounds["federated"]["strategy"] == "scaffold"
    assert rounds["federated"]["rounds_completed"] == 2
    assert json.loads((out / "metrics/privacy.json").read_text())["enabled"] is False
    registration = json.loads((out / "reports/registration/registration.json").read_text())
    assert registration["promoted"] is True, registration["reasons"]
    assert registration["data_version"] not in ("", "unversioned")
    confusion = json.loads((out / "reports/evaluation/confusion.json").read_text())
    # every global model, and the public-only model they all started from (model.init: public)
    assert set(confusion) == {"public_only", "centralized", "federated"}
    card = (out / "reports/registration/model_card.md").read_text()
    assert "Candidate: `federated`" in card
    assert "Differential privacy: off for this candidate" in card

    # The real MLflow server holds the version, with the champion alias the gate granted
    assert not (out / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias(registration["model_name"], "champion")
    assert version.version == registration["version"]
    run_ = client.get_run(registration["run_id"])
    assert run_.data.params["base.profile"] == "tiny"
    assert run_.data.tags["data_version"] == registration["data_version"]
    # The exit handler saw a success and recorded no failure
    failed = client.search_runs(
        [run_.info.experiment_id], filter_string="tags.pipeline_status = 'FAILED'"
    )
    assert failed == []


def test_failed_pipeline_is_recorded_in_mlflow_and_registers_nothing(project: Path) -> None:
    # Prepare: data that cannot pass validation (too few patients for the threshold); no
    # MLFLOW_TRACKING_URI, so the run records into params' SQLite store in its own folder
    set_params(
        project,
        {
            "profiles.tiny.validate_data": {"min_patients_per_hospital": 10_000},
            "validate_data.min_patients_per_hospital": 10_000,
        },
    )

    # Execute
    result = run(["privfed", "pipeline", "run-local", "--root", "kfp-root"], project, project_env())

    # Assert: non-zero exit naming the failed task; the exit handler recorded it; no model
    assert result.returncode == 1
    output = " ".join((result.stdout + result.stderr).split())
    assert "validate-data" in output
    # the run's own MLflow store, not the one `dvc repro` registers in
    store = project / LOCAL_OUT / "mlflow.db"
    assert store.is_file() and not (project / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("privfed")
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["pipeline_status"] == "FAILED"
    assert client.search_registered_models() == []
    assert not (project / LOCAL_OUT / "reports/registration").exists()
