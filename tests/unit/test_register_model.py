"""register_model on a real (tiny) candidate and a real MLflow store: the split the gate reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import config_from_dict
from privfed.stages import register_model
from privfed.tasks import get_task
from tests.conftest import raw_params

# Prepared evaluation: the DP candidate looks fine on test (0.88 vs 0.90) but is weak on the
# validation split (0.40 vs 0.90): one lucky test score that the val split does not confirm.
SUMMARY = {
    "primary_metric": "macro_auroc",
    "centralized": 0.90,
    "local_mean": 0.70,
    "federated": 0.89,
    "federated_dp": 0.88,
    "epsilon": 0.5,
    "val": {"centralized": 0.90, "federated": 0.89, "federated_dp": 0.40},
}


def _inputs(root: Path, cfg) -> dict[str, Path]:
    """The stage's inputs as evaluate_models and the training stages would leave them."""
    task = get_task(cfg.base.task, cfg)
    candidate = root / "models" / "federated" / "federated_dp"
    save_model(candidate / MODEL_FILE, task.build_model().state_dict(), task=task.name)
    (root / "models" / "centralized").mkdir(parents=True)
    (root / "validation").mkdir()
    (root / "validation" / "report.json").write_text(json.dumps({"success": True}))
    # hospital_1's examples were counted (as for notes): 2 per patient at most
    patient = {"epsilon": 1.0, "delta": 2 * 2.718281828**0.5 * 1e-5}
    hospital = {"epsilon": 0.5, "examples_per_patient": 2, "patient_level": patient}
    (root / "privacy.json").write_text(
        json.dumps(
            {"enabled": True, "epsilon": 0.5, "delta": 1e-5, "hospitals": {"hospital_1": hospital}}
        )
    )
    (root / "evaluation.json").write_text(json.dumps({"summary": SUMMARY, "models": {}}))
    (root / "report").mkdir()
    (root / "report" / "comparison.md").write_text("| model |\n|---|\n")
    (root / "plots").mkdir()
    return {
        "validation": root / "validation",
        "centralized": root / "models" / "centralized",
        "federated": root / "models" / "federated",
        "privacy": root / "privacy.json",
        "evaluation": root / "evaluation.json",
        "report": root / "report",
        "plots": root / "plots",
        "dvc_lock": root / "dvc.lock",  # absent: data version 'unversioned'
    }


def _register(tmp_path: Path, split: str) -> tuple[dict, str]:
    cfg = config_from_dict(raw_params(register_model={"gate_split": split}))
    root = tmp_path / split
    root.mkdir()
    inputs = _inputs(root, cfg)
    result = register_model.run(cfg, inputs, {"registration": root / "registration"})
    return result, (root / "registration" / "model_card.md").read_text()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """One MLflow store (the default relative sqlite path, anchored at the cwd) per test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_the_gate_reads_val_and_refuses_a_lucky_test_score(tmp_path: Path, store: str) -> None:
    """gate_split val: 0.40 / 0.90 = 0.444 is below the tiny profile's ratio 0.5 and floor 0.5;
    gate_split test would have promoted the same candidate on its 0.88."""
    from mlflow import MlflowClient

    # Execute
    refused, card = _register(tmp_path, "val")
    # Assert
    assert refused["alias"] == "challenger"
    assert refused["checks"]["split"] == "val"
    assert refused["checks"]["candidate_metric"] == pytest.approx(0.40)
    assert refused["reasons"][0].startswith("utility ratio 0.444 to centralized on the val split")
    floor = "primary metric 0.4000 on the val split is below register_model.metric_floor=0.5"
    assert refused["reasons"][1] == floor
    assert "The gate read the pooled **val** split" in card
    assert "`federated_dp`: val 0.4, test 0.88" in card
    assert "`centralized`: val 0.9, test 0.9" in card
    assert "Utility ratio to centralized: val 0.444, test 0.978" in card
    client = MlflowClient(tracking_uri=store)
    metrics = client.get_run(refused["run_id"]).data.metrics
    assert metrics["eval.val.federated_dp"] == pytest.approx(0.40)
    assert metrics["eval.federated_dp"] == pytest.approx(0.88)
    assert metrics["privacy.examples_per_patient.hospital_1"] == 2
    assert metrics["privacy.patient_epsilon.hospital_1"] == pytest.approx(1.0)
    version = client.get_model_version(refused["model_name"], refused["version"])
    assert version.tags["gate.split"] == "val"


def test_gate_split_test_decides_on_the_test_score(tmp_path: Path, store: str) -> None:
    promoted, card = _register(tmp_path, "test")
    assert promoted["alias"] == "champion", promoted["reasons"]
    assert promoted["checks"]["candidate_metric"] == pytest.approx(0.88)
    assert "The gate read the pooled **test** split" in card


def test_gate_split_val_needs_the_val_scores(tmp_path: Path, store: str) -> None:
    """An evaluation written before evaluate_models scored val is refused, not read as test."""
    cfg = config_from_dict(raw_params(register_model={"gate_split": "val"}))
    inputs = _inputs(tmp_path, cfg)
    old = {k: v for k, v in SUMMARY.items() if k != "val"}
    inputs["evaluation"].write_text(json.dumps({"summary": old, "models": {}}))
    with pytest.raises(ValueError, match="no validation-split scores"):
        register_model.run(cfg, inputs, {"registration": tmp_path / "registration"})


def test_the_notes_card_states_the_unit_and_the_per_patient_guarantee(tmp_path: Path) -> None:
    """privacy.json as account_privacy writes it for notes (one patient with 3 notes) reaches
    the model card as "per note …; a patient with up to 3 notes: …"."""
    from privfed.registry import promotion_gate
    from privfed.stages import account_privacy
    from privfed.tasks.notes.layout import write_notes

    # Prepare: account for a DP run whose hospital_1 has a patient with 3 training notes
    cfg = config_from_dict(
        raw_params(
            base={"task": "notes"},
            privacy={"epsilon_budget": 50.0},
            register_model={"model_name": "privfed-notes"},
        )
    )
    fed = tmp_path / "federated"
    fed.mkdir()
    history = {"hospital_1": [[1.0, 0.1, 30]]}
    (fed / "rounds.json").write_text(json.dumps({"federated_dp": {"dp_history": history}}))
    hospital = tmp_path / "partitions" / "hospital_1"
    for split in ("val", "test"):
        (hospital / split).mkdir(parents=True)
    write_notes(
        [
            {"note_id": f"n{i}", "patient_id": p, "hospital": "hospital_1", "text": "a b"}
            for i, p in enumerate(["p1", "p2", "p1", "p1"])
        ],
        hospital / "train" / "notes.jsonl",
    )
    privacy = account_privacy.run(
        cfg, {"federated": fed, "partitions": tmp_path / "partitions"}, {"privacy": tmp_path / "p"}
    )
    eps, patient = privacy["epsilon"], privacy["patient_level"]
    summary = {**SUMMARY, "primary_metric": "perplexity", "hospitals": ["hospital_1"]}
    decision = promotion_gate(
        candidate_metric=2.0,
        central_metric=2.0,
        min_ratio=0.5,
        epsilon=eps,
        epsilon_budget=50.0,
        validation_passed=True,
        higher_is_better=False,
        split="val",
    )
    # Execute
    card = register_model.model_card(
        cfg, summary, decision, version="1", data_hash="d", commit="c", table="", privacy=privacy
    )
    # Assert
    fmt = register_model._fmt
    assert "- Unit of privacy: one note (a patient with several notes" in card
    assert (
        f"per note ε = {fmt(eps)}, δ = 1e-05; a patient with up to 3 notes (the most one patient "
        f"has in a hospital's training split): ε = {fmt(patient['epsilon'])}, "
        f"δ = {fmt(patient['delta'])}"
    ) in card
    assert patient["epsilon"] == pytest.approx(3 * eps)
    assert f"per patient (up to 3 notes) ε {fmt(patient['epsilon'])}" in card  # hospital line
