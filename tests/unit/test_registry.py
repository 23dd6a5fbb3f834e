from __future__ import annotations

import math
import os

import pytest

from privfed.registry import (
    TASK_TAG,
    Champion,
    check_model_task,
    current_champion,
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
        split="val",
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


def test_a_floor_refuses_a_model_that_only_beats_a_poor_baseline() -> None:
    # the attack: 50 % label noise, centralized AUROC 0.357, a 0.589 DP model at ratio 1.65
    poor = _gate(candidate_metric=0.589, central_metric=0.357, floor=0.6)
    assert not poor.promote
    assert poor.reasons == [
        "primary metric 0.5890 on the val split is below register_model.metric_floor=0.6"
    ]
    assert _gate(candidate_metric=0.589, central_metric=0.357).promote  # what it did before
    # lower is better (perplexity): the floor is an upper bound
    assert not _gate(
        candidate_metric=2.0, central_metric=2.0, floor=1.9, higher_is_better=False
    ).promote


def test_a_model_without_dp_is_champion_only_when_the_operator_allows_it() -> None:
    no_dp = _gate(epsilon=0.5, trained_with_dp=False, require_dp=True)
    assert not no_dp.promote and "register_model.require_dp is true" in no_dp.reasons[0]
    assert _gate(epsilon=0.5, trained_with_dp=False, require_dp=False).promote


def test_a_better_champion_on_the_same_data_is_not_demoted() -> None:
    better = Champion(version="3", metric=0.89, data_version="d1", split="val")
    kept = _gate(candidate_metric=0.88, champion=better, data_version="d1")
    assert not kept.promote
    assert kept.reasons == [
        "current champion v3 scored 0.8900 on the same data version and val split; this "
        "candidate's 0.8800 would demote it"
    ]
    assert _gate(candidate_metric=0.895, champion=better, data_version="d1").promote
    # other data: scored on another test set, so not compared, and the card says so
    other = _gate(candidate_metric=0.88, champion=better, data_version="d2")
    assert other.promote and "not compared (different test data)" in other.notes[0]


def test_the_reasons_name_the_split_the_gate_read() -> None:
    low = _gate(candidate_metric=0.70, split="test")
    assert low.reasons[0].startswith("utility ratio 0.778 to centralized on the test split")
    assert low.checks["split"] == "test"
    assert "on the val split" in _gate(candidate_metric=None).reasons[0]


def test_a_champion_gated_on_another_split_is_not_compared() -> None:
    """A champion's test score says nothing about whether a val score beats it."""
    # Prepare: the champion's 0.95 was read on test (every version gated before gate_split)
    on_test = Champion(version="2", metric=0.95, data_version="d1")
    # Execute
    decision = _gate(candidate_metric=0.88, champion=on_test, data_version="d1")
    # Assert
    assert decision.promote
    assert decision.notes == [
        "current champion v2 was scored on the test split, this candidate on the val split: "
        "not compared"
    ]
    same = Champion(version="2", metric=0.95, data_version="d1", split="val")
    assert not _gate(candidate_metric=0.88, champion=same, data_version="d1").promote


def test_current_champion_reads_what_the_gate_tagged(tmp_path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert current_champion(client, "m") is None  # no such model yet
    client.create_registered_model("m")
    client.create_model_version("m", source="runs:/x/model")
    assert current_champion(client, "m") is None  # no version holds the alias
    client.set_registered_model_alias("m", "champion", "1")
    assert current_champion(client, "m") == Champion("1", None, None)  # tagged by no gate
    client.set_model_version_tag("m", "1", "gate.candidate_metric", "0.87")
    client.set_model_version_tag("m", "1", "data_version", "abc")
    assert current_champion(client, "m") == Champion("1", 0.87, "abc", "test")  # no gate.split
    client.set_model_version_tag("m", "1", "gate.split", "val")
    assert current_champion(client, "m") == Champion("1", 0.87, "abc", "val")


def test_what_a_killed_registration_left_is_closed_by_the_next_one(tmp_path) -> None:
    """kill -9 right after "Created version 1": the run stays RUNNING, the version READY with
    no alias and no gate tags. The next registration must close both, and must leave alone a
    registration that is still in progress."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    from privfed.registry import REGISTRATION_TAG, recover_interrupted, registration_owner

    # Prepare: a registration whose process is dead (it ran in a child that has exited) ...
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    owner = {**registration_owner(), f"{REGISTRATION_TAG}.pid": dead}
    killed = client.create_run(exp, tags={REGISTRATION_TAG: "pending", **owner})
    client.create_registered_model("m")
    client.create_model_version("m", source="runs:/x/model", run_id=killed.info.run_id)
    # ... and one in progress in this very test process's parent (alive)
    alive = {**registration_owner(), f"{REGISTRATION_TAG}.pid": str(os.getppid())}
    busy = client.create_run(exp, tags={REGISTRATION_TAG: "pending", **alive})

    # Execute
    closed = recover_interrupted(client, exp, "m")

    # Assert
    assert closed == [f"run {killed.info.run_id}", "m v1"]
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags[REGISTRATION_TAG] == "failed"
    version = client.get_model_version("m", "1")
    assert version.tags[REGISTRATION_TAG] == "failed" and not version.aliases
    assert "interrupted" in version.tags["promotion_reason"]
    assert client.get_run(busy.info.run_id).info.status == "RUNNING"
    assert recover_interrupted(client, exp, "m") == []  # nothing left to close
