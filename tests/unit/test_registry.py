from __future__ import annotations

import math

import pytest

from privfed.registry import (
    TASK_TAG,
    check_model_task,
    data_version,
    promotion_gate,
    registered_task,
    utility_ratio,
)


def _gate(**kw):
    args = dict(
        candidate_metric=0.88,
        central_metric=0.90,
        min_ratio=0.9,
        epsilon=0.9,
        epsilon_budget=1.0,
        validation_passed=True,
    )
    return promotion_gate(**{**args, **kw})


def test_gate_promotes_when_every_check_passes() -> None:
    decision = _gate()
    assert decision.promote and decision.alias == "champion" and decision.reasons == []


def test_gate_withholds_and_says_why() -> None:
    assert "utility ratio 0.778" in _gate(candidate_metric=0.70).reasons[0]
    assert "epsilon 3.000 exceeds privacy budget 1.0" in _gate(epsilon=3.0).reasons[0]
    assert "validation" in _gate(validation_passed=False).reasons[0]
    assert _gate(epsilon=math.inf).alias == "challenger"
    assert len(_gate(candidate_metric=0.1, epsilon=9, validation_passed=False).reasons) == 3


def test_data_version_hashes_dvc_lock_outs(tmp_path) -> None:
    lock = tmp_path / "dvc.lock"
    assert data_version(lock) == "unversioned"
    lock.write_text(
        "stages:\n  generate_data:\n    outs:\n    - path: data/raw\n      md5: abc.dir\n"
    )
    first = data_version(lock)
    lock.write_text(
        "stages:\n  generate_data:\n    outs:\n    - path: data/raw\n      md5: abd.dir\n"
    )
    assert first != data_version(lock) and len(first) == 16


def test_a_zero_baseline_gives_an_infinite_ratio_not_a_crash() -> None:
    assert utility_ratio(0.3, 0.0) == math.inf  # e.g. a tiny centralized model with Dice 0
    assert math.isnan(utility_ratio(0.0, 0.0))
    assert utility_ratio(2.0, 4.0) == 0.5
    assert utility_ratio(2.0, 4.0, higher_is_better=False) == 2.0  # lower is better: inverted
    gate = _gate(candidate_metric=0.3, central_metric=0.0)
    assert gate.checks["utility_ratio"] == math.inf and gate.promote


def test_a_name_holding_another_tasks_models_is_refused(tmp_path) -> None:
    """Switching base.task but keeping model_name must not make a notes model the champion
    of the readmission model; a name not yet registered, or of the same task, is fine."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_model_task(client, "privfed-readmission", "notes")  # not registered yet
    client.create_registered_model("privfed-readmission", tags={TASK_TAG: "readmission"})
    check_model_task(client, "privfed-readmission", "readmission")
    with pytest.raises(ValueError, match="'privfed-readmission' holds 'readmission' models"):
        check_model_task(client, "privfed-readmission", "notes")
    # a name registered before the tag existed: its newest version's run says the task
    run = client.create_run(client.create_experiment("e"), tags={TASK_TAG: "segmentation"})
    client.create_registered_model("privfed-old")
    client.create_model_version("privfed-old", source="runs:/x/model", run_id=run.info.run_id)
    assert registered_task(client, "privfed-old") == "segmentation"
    with pytest.raises(ValueError, match="privfed-notes"):
        check_model_task(client, "privfed-old", "notes")
