"""privfed.tracking: one MLflow run per pipeline run, logged while it runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from privfed.config import PrivFedConfig, config_from_dict
from privfed.federated import LIVE_FILE
from privfed.io import write_json
from privfed.privacy import epsilon_from_history
from privfed.tracking import (
    KIND_TAG,
    LiveRounds,
    RoundLog,
    current,
    open_pipeline_run,
    tracked_stage,
)
from tests.conftest import raw_params


def _cfg(tmp_path: Path, **register: object) -> PrivFedConfig:
    p = raw_params()
    p["register_model"] = {
        **p["register_model"],
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        **register,
    }
    return config_from_dict(p)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PrivFedConfig:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return _cfg(tmp_path)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _row(r: int, train: dict, val: dict | None = None, **events: dict) -> dict:
    return {
        "round": r,
        "train": train,
        "train_loss": 0.5,
        "seconds": 1.5,
        "val": {"auroc": sum(v["auroc"] for v in (val or {}).values()) / len(val)} if val else {},
        "val_per_hospital": val or {},
        "rejected": events.get("rejected", {}),
        "dropouts": events.get("dropouts", {}),
    }


def test_stages_of_one_config_share_a_run_until_registration_ends_it(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    # Execute: two stages, one failure and its rerun, then a finished run and a new stage
    first = open_pipeline_run(cfg, tmp_path)
    again = open_pipeline_run(cfg, tmp_path)
    first.end("FAILED")  # a stage failed; the rerun after a fix goes on in the same run
    rerun = open_pipeline_run(cfg, tmp_path)
    rerun.end("FINISHED")  # register_model ended it
    later = open_pipeline_run(cfg, tmp_path)
    # Assert
    assert first.run_id == again.run_id == rerun.run_id != later.run_id
    client = MlflowClient(tracking_uri=first.uri)
    assert client.get_run(first.run_id).info.status == "FINISHED"
    run = client.get_run(later.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[KIND_TAG] == "pipeline"
    assert run.data.params["train_federated.rounds"] == str(cfg.train_federated.rounds)


def test_a_changed_config_starts_a_new_run_and_closes_the_old(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    old = open_pipeline_run(cfg, tmp_path)
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"weight_decay": 0.123})})
    new = open_pipeline_run(changed, tmp_path)
    run = MlflowClient(tracking_uri=old.uri).get_run(old.run_id)
    assert new.run_id != old.run_id
    assert run.info.status == "KILLED" and run.data.tags["privfed.superseded_by"] == new.run_id


def test_a_tracked_stage_logs_its_figures_and_reports_but_never_data(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    # Prepare: a report folder and a data folder the stage "wrote"
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep/report.json").write_text("{}")
    (tmp_path / "dat").mkdir()
    (tmp_path / "dat/patients.csv").write_text("id\n1\n")
    spec = {"report": "reports/validation", "data": "data/validated"}
    outputs = {"report": tmp_path / "rep", "data": tmp_path / "dat"}
    # Execute
    with tracked_stage("validate_data", cfg, spec, outputs) as result:
        run = current()
        result["metrics"] = {
            "success": True,
            "rows": 12,
            "per": {"h1": 0.5},
            "selection": {"val_curve": [0.6, 0.8, 0.7]},  # by epoch
            "rounds": [{"round": 1}],  # rows are logged with their step where they happen
        }
    # Assert
    assert run is not None and current() is None
    client = MlflowClient(tracking_uri=run.uri)
    data = client.get_run(run.run_id).data
    assert data.tags["privfed.stage.validate_data"] == "done"
    assert data.metrics == {
        "validate_data.rows": 12.0,
        "validate_data.per.h1": 0.5,
        "validate_data.selection.val_curve": 0.7,  # the last step
    }
    curve = _history(client, run.run_id, "validate_data.selection.val_curve")
    assert curve == [(1, 0.6), (2, 0.8), (3, 0.7)]
    logged = [a.path for a in client.list_artifacts(run.run_id, "reports/validation")]
    assert logged == ["reports/validation/report.json"]
    assert client.list_artifacts(run.run_id, "data") == []


def test_a_failing_stage_leaves_the_run_failed_for_its_rerun(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    with (
        pytest.raises(ValueError, match="bad hospital"),
        tracked_stage("partition_data", cfg, {}, {}),
    ):
        run = current()
        raise ValueError("bad hospital")
    got = MlflowClient(tracking_uri=run.uri).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["privfed.stage.partition_data"] == "failed"
    assert open_pipeline_run(cfg, tmp_path).run_id == run.run_id


def test_live_off_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    off = _cfg(tmp_path, live=False)
    with tracked_stage("validate_data", off, {}, {}) as result:
        assert current() is None
        result["metrics"] = {"rows": 1}
    assert not (tmp_path / "mlflow.db").exists()


def test_round_log_writes_each_round_once_and_validation_a_round_later(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    # Prepare: round 1 trained by h1 and h2 (h2's update rejected), h3 dropped out
    run = open_pipeline_run(cfg, tmp_path)
    train = {
        "h1": {"train_loss": 0.4, "num_examples": 10, "bytes_sent": 100},
        "h2": {"train_loss": 0.6, "num_examples": 30},
    }
    r1 = _row(1, train, rejected={"h2": "norm"}, dropouts={"h3": "timeout"})
    rows = [_row(0, {}), r1]
    log = RoundLog(run, "federated")
    # Execute: round 1 ends; then round 2's replies bring round 1's model's validation
    assert log.rows(rows) == 1
    assert log.rows(rows) == 0  # nothing new: nothing logged twice
    r1["val"], r1["val_per_hospital"] = {"auroc": 0.7}, {"h1": {"auroc": 0.6}, "h2": {"auroc": 0.8}}
    log.rows(rows)
    # Assert
    client = MlflowClient(tracking_uri=run.uri)
    assert _history(client, run.run_id, "federated.round") == [(1, 1.0)]
    assert _history(client, run.run_id, "federated.train_loss") == [(1, 0.5)]
    assert _history(client, run.run_id, "federated.h1.took_part") == [(1, 1.0)]
    assert _history(client, run.run_id, "federated.h2.took_part") == [(1, 0.0)]  # rejected
    assert _history(client, run.run_id, "federated.h3.took_part") == [(1, 0.0)]  # dropped
    assert _history(client, run.run_id, "federated.participants") == [(1, 1.0)]
    assert _history(client, run.run_id, "federated.h1.bytes_sent") == [(1, 100.0)]
    assert _history(client, run.run_id, "federated.auroc") == [(1, 0.7)]
    assert _history(client, run.run_id, "federated.h2.val_auroc") == [(1, 0.8)]


def test_live_rounds_log_each_round_while_the_run_goes_on(
    cfg: PrivFedConfig, tmp_path: Path
) -> None:
    # Prepare: a ServerApp's live file after round 1 (h1 has spent 5 DP-SGD steps)
    run = open_pipeline_run(cfg, tmp_path)
    out = tmp_path / "federated_dp"
    out.mkdir()
    history = [[1.1, 0.1, 5]]
    state = {
        "completed": 1,
        "num_rounds": 3,
        "rounds": [_row(0, {}), _row(1, {"h1": {"train_loss": 0.4, "num_examples": 10}})],
        "dp_history": {"h1": history},
    }
    write_json(state, out / LIVE_FILE)
    client = MlflowClient(tracking_uri=run.uri)
    # Execute: the federation goes on; the stage's follower logs without being asked
    with LiveRounds(run, "federated_dp", out, delta=1e-5, accountant="rdp", poll_s=0.05) as live:
        deadline = time.monotonic() + 30
        while not client.get_metric_history(run.run_id, "federated_dp.round"):
            assert time.monotonic() < deadline, "round 1 never reached MLflow"
            time.sleep(0.05)
        tags = client.get_run(run.run_id).data.tags
        final = json.loads((out / LIVE_FILE).read_text())
        final["rounds"][1]["val"] = {"auroc": 0.9}  # the final evaluation's figures
        live.finish(final)
    # Assert
    expected = epsilon_from_history(history, delta=1e-5, accountant="rdp")
    assert tags["privfed.federation.federated_dp"] == "running"
    assert _history(client, run.run_id, "federated_dp.h1.epsilon") == [(1, pytest.approx(expected))]
    assert _history(client, run.run_id, "federated_dp.auroc") == [(1, 0.9)]
    done = client.get_run(run.run_id).data.tags["privfed.federation.federated_dp"]
    assert done == "done"


def test_a_store_another_process_is_creating_is_retried(
    cfg: PrivFedConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating one SQLite store: the loser's "already exists" is waited out
    (``mlflow ui`` or the dashboard started beside ``make run``); other errors are not."""
    from sqlalchemy.exc import OperationalError

    from privfed import registry, tracking

    real = registry.experiment_id
    calls = []

    def racing(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("CREATE TABLE x", {}, Exception("table x already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "experiment_id", racing)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    run = open_pipeline_run(cfg, tmp_path)
    assert len(calls) == 2 and run.run_id

    def locked(*args: object, **kwargs: object) -> str:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(registry, "experiment_id", locked)
    with pytest.raises(OperationalError, match="locked"):
        open_pipeline_run(cfg, tmp_path)
