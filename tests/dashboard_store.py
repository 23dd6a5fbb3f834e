"""A small MLflow store laid out as docs/tracking.md says, for the dashboard's tests.

It plays the writer side of the contract (the stages and ``register_model``) with plain
``MlflowClient`` calls, so the dashboard is tested against the documented layout rather than
against whatever one version of the stages happens to write. Every number is a closed formula
of (round, hospital) so that tests can work out what the dashboard must show.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

EXPERIMENT = "privfed-dashboard-test"
MODEL_NAME = "privfed-dashboard-model"
HOSPITALS = ("hospital_a", "hospital_b", "hospital_c")
ROUNDS = 5
BUDGET = 8.0
METRIC = "macro_auroc"


def train_loss(r: int, i: int) -> float:
    return round(1.0 / r + 0.1 * i, 6)


def val_score(r: int, i: int) -> float:
    return round(0.5 + 0.05 * r + 0.01 * i, 6)


def epsilon(r: int, i: int) -> float:
    return round(0.5 * r * (1 + 0.1 * i), 6)


def open_store(folder: Path) -> tuple[str, MlflowClient, str]:
    """``(tracking URI, client, experiment id)`` of a new SQLite store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT)
    if exp_id is None:
        exp = client.create_experiment(EXPERIMENT, artifact_location=(folder / "art").as_uri())
    else:
        exp = exp_id.experiment_id
    return uri, client, str(exp)


def start_pipeline_run(
    client: MlflowClient, exp_id: str, *, name: str = "pipeline", dp: bool = True
) -> str:
    """A RUNNING pipeline run with the contract's tags and the flattened params."""
    run = client.create_run(exp_id, run_name=name)
    tags = {
        "privfed.kind": "pipeline",
        "privfed.pipeline_key": "local:/tmp/project",
        "privfed.config_digest": "abc123",
        "task": "readmission",
        "candidate": "federated_dp" if dp else "federated",
        "privfed.strategy": "fedavg",
        "privfed.dp": "true" if dp else "false",
        "privfed.stage.train_federated": "running",
    }
    params = {
        "base.task": "readmission",
        "train_federated.rounds": str(ROUNDS),
        "train_federated.strategy": "fedavg",
        "privacy.epsilon_budget": str(BUDGET),
    }
    client.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    return run.info.run_id


def log_round(
    client: MlflowClient,
    run_id: str,
    r: int,
    *,
    federation: str = "federated_dp",
    dropped: tuple[str, ...] = (),
) -> None:
    """Round ``r`` of ``federation`` as train_federated logs it (step = round)."""
    now = int(time.time() * 1000)
    values: dict[str, float] = {f"{federation}.round": float(r)}
    took = [h for h in HOSPITALS if h not in dropped]
    for i, h in enumerate(HOSPITALS):
        part = h in took
        values[f"{federation}.{h}.took_part"] = 1.0 if part else 0.0
        values[f"{federation}.{h}.val_{METRIC}"] = val_score(r, i)
        values[f"{federation}.{h}.val_loss"] = train_loss(r, i) + 0.05
        if part:
            values[f"{federation}.{h}.train_loss"] = train_loss(r, i)
            values[f"{federation}.{h}.num_examples"] = 100.0 + i
            values[f"{federation}.{h}.bytes_sent"] = 1000.0 * (i + 1)
            values[f"{federation}.{h}.bytes_received"] = 2000.0 * (i + 1)
            if federation == "federated_dp":
                values[f"{federation}.{h}.epsilon"] = epsilon(r, i)
    values[f"{federation}.train_loss"] = sum(
        train_loss(r, i) for i, h in enumerate(HOSPITALS) if h in took
    ) / len(took)
    values[f"{federation}.{METRIC}"] = sum(val_score(r, i) for i in range(len(HOSPITALS))) / 3
    values[f"{federation}.participants"] = float(len(took))
    values[f"{federation}.dropouts"] = float(len(HOSPITALS) - len(took))
    values[f"{federation}.rejected_updates"] = 0.0
    values[f"{federation}.seconds"] = 2.0 + r
    if federation == "federated_dp":
        values[f"{federation}.epsilon"] = max(
            epsilon(r, i) for i, h in enumerate(HOSPITALS) if h in took
        )
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, r) for k, v in values.items()],
        tags=[RunTag(f"privfed.federation.{federation}", "running")],
    )


def _png(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


COMPARISON = {
    "centralized": {
        "pooled": {"macro_auroc": 0.81, "accuracy": 0.74},
        "per_hospital": {},
        "mean_per_hospital": 0.8,
        "epsilon": "inf",
    },
    "local:hospital_a": {
        "pooled": {"macro_auroc": 0.66, "accuracy": 0.61},
        "per_hospital": {},
        "mean_per_hospital": 0.65,
        "epsilon": "inf",
    },
    "federated": {
        "pooled": {"macro_auroc": 0.79, "accuracy": 0.72},
        "per_hospital": {},
        "mean_per_hospital": 0.78,
        "epsilon": "inf",
        "membership_audit": {
            "loss_threshold": {"auroc": 0.58, "tpr_at_1pct_fpr": 0.03},
            "members": 50,
        },
    },
    "federated_dp": {
        "pooled": {"macro_auroc": 0.75, "accuracy": 0.7},
        "per_hospital": {},
        "mean_per_hospital": 0.74,
        "epsilon": 3.9,
        "membership_audit": {
            "loss_threshold": {"auroc": 0.51, "tpr_at_1pct_fpr": 0.011},
            "members": 50,
        },
    },
    "public_only": {
        "pooled": {"macro_auroc": 0.55, "accuracy": 0.5},
        "per_hospital": {},
        "mean_per_hospital": 0.55,
        "epsilon": 0.0,
    },
}

MODEL_CARD = "# Model card: privfed-dashboard-model v1\n\nCard text for the dashboard test."
GATE_REASON = "utility ratio 0.926 to centralized on the val split is below 0.95"


def finish_pipeline_run(
    client: MlflowClient, run_id: str, *, gate: str = "challenger", with_audit_metrics: bool = True
) -> str:
    """What evaluate_models and register_model add, then the run ends; returns the version."""
    client.log_text(run_id, json.dumps(COMPARISON), "reports/evaluation/comparison.json")
    client.log_text(
        run_id,
        "# Model comparison (readmission)\n\nReport text.",
        "reports/evaluation/comparison.md",
    )
    client.log_text(run_id, "{}", "metrics/evaluate_models.json")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "federated_rounds.png"
        png.write_bytes(_png())
        client.log_artifact(run_id, str(png), "plots")
        (Path(tmp) / "overlay.png").write_bytes(_png())  # a task's own figure
        client.log_artifact(run_id, str(Path(tmp) / "overlay.png"), "reports/evaluation/figures")
        (Path(tmp) / "logo.png").write_bytes(_png())  # validate_data's Data Docs carry images
        client.log_artifact(run_id, str(Path(tmp) / "logo.png"), "reports/validation/data_docs")
    metrics = [
        Metric(f"privacy.epsilon.{h}", epsilon(ROUNDS, i), 0, 0) for i, h in enumerate(HOSPITALS)
    ]
    if with_audit_metrics:
        metrics.append(Metric("audit.federated_dp.loss_threshold_auroc", 0.51, 0, 0))
    client.log_batch(run_id, metrics=metrics)
    if not client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    version = client.create_model_version(
        MODEL_NAME, source, run_id=run_id, description=MODEL_CARD
    ).version
    client.set_registered_model_alias(MODEL_NAME, gate, version)
    reason = GATE_REASON if gate == "challenger" else "passed all gate checks"
    client.set_model_version_tag(MODEL_NAME, version, "promotion_reason", reason)
    client.set_model_version_tag(MODEL_NAME, version, "gate.utility_ratio", "0.926")
    client.set_model_version_tag(MODEL_NAME, version, "gate.split", "val")
    tags = {
        "privfed.gate": gate,
        "privfed.gate_reasons": reason if gate == "challenger" else "",
        "privfed.model_version": str(version),
        "privfed.federation.federated_dp": "done",
        "privfed.stage.train_federated": "done",
        "privfed.stage.register_model": "done",
    }
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run_id, "FINISHED")
    return str(version)


def finished_store(folder: Path, *, dropped_at: int = 3) -> tuple[str, str]:
    """A store holding one finished DP pipeline run (hospital_c dropped out at ``dropped_at``);
    returns ``(tracking URI, run id)``."""
    uri, client, exp_id = open_store(folder)
    run_id = start_pipeline_run(client, exp_id, name="finished-run")
    for r in range(1, ROUNDS + 1):
        log_round(client, run_id, r, dropped=("hospital_c",) if r == dropped_at else ())
    finish_pipeline_run(client, run_id)
    return uri, run_id
