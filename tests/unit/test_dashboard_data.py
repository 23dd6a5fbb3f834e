"""privfed.dashboard.data reads the pipeline run that docs/tracking.md lays out."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from privfed.dashboard import data
from tests import dashboard_store as store


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str]:
    """One finished DP pipeline run: hospital_c dropped out of round 3."""
    uri, run_id = store.finished_store(tmp_path_factory.mktemp("store"))
    return MlflowClient(tracking_uri=uri, registry_uri=uri), run_id


def test_run_list_holds_pipeline_runs_only_with_gate_and_epsilon(
    finished: tuple[MlflowClient, str],
) -> None:
    # Prepare: a run of another kind in the same experiment must not be listed
    client, run_id = finished
    exp_id = data.experiment_id(client, store.EXPERIMENT)
    client.create_run(exp_id, run_name="not-a-pipeline")
    # Execute
    runs = data.pipeline_runs(client, store.EXPERIMENT)
    # Assert
    assert list(runs["run_id"]) == [run_id]
    row = runs.iloc[0]
    assert (row["task"], row["strategy"], bool(row["dp"])) == ("readmission", "fedavg", True)
    assert (row["status"], row["gate"], row["model_version"]) == ("FINISHED", "challenger", "1")
    # federated_dp.epsilon's last value: the max over hospitals who took part in round 5
    assert row["epsilon"] == pytest.approx(store.epsilon(5, 2))


def test_unknown_experiment_is_named_in_the_error(finished: tuple[MlflowClient, str]) -> None:
    client, _ = finished
    with pytest.raises(ValueError, match="'no-such-experiment'"):
        data.pipeline_runs(client, "no-such-experiment")


def test_run_epsilon_falls_back_to_the_accountants_per_hospital_figures() -> None:
    metrics = {"privacy.epsilon.a": 1.5, "privacy.epsilon.b": 2.5, "eval.x": 9.0}
    assert data.run_epsilon(metrics) == 2.5
    assert data.run_epsilon({"eval.x": 9.0}) is None


def test_federation_hospitals_and_primary_metric_come_from_the_keys(
    finished: tuple[MlflowClient, str],
) -> None:
    client, run_id = finished
    run = client.get_run(run_id)
    assert data.federations(run) == ["federated_dp"]
    # a stage's flattened metrics file is not a federation
    run.data.metrics["train_federated.summary.round"] = 5.0
    assert data.federations(run) == ["federated_dp"]
    assert data.hospitals(run.data.metrics, "federated_dp") == list(store.HOSPITALS)
    assert data.val_metrics(run.data.metrics, "federated_dp") == ["loss", store.METRIC]
    assert data.primary_metric(["loss", store.METRIC]) == store.METRIC
    assert data.primary_metric(["loss", "bleu"]) == "bleu"  # not a known one: first non-loss


def test_round_progress_counts_rounds_of_the_configured_total(
    finished: tuple[MlflowClient, str],
) -> None:
    client, run_id = finished
    progress = data.round_progress(client.get_run(run_id), "federated_dp")
    assert (progress.done, progress.total, progress.running) == (5, 5, False)
    assert progress.label == "5 / 5"


def test_live_run_progress_advances_as_rounds_are_logged(tmp_path: Path) -> None:
    # Prepare: a RUNNING run with two rounds logged
    _, client, exp_id = store.open_store(tmp_path)
    run_id = store.start_pipeline_run(client, exp_id)
    for r in (1, 2):
        store.log_round(client, run_id, r)
    # Execute / Assert
    progress = data.round_progress(client.get_run(run_id), "federated_dp")
    assert (progress.label, progress.running) == ("2 / 5", True)
    store.log_round(client, run_id, 3)
    assert data.round_progress(client.get_run(run_id), "federated_dp").label == "3 / 5"


def test_curves_per_hospital_and_global(finished: tuple[MlflowClient, str]) -> None:
    client, run_id = finished
    frame = data.curves(client, client.get_run(run_id), "federated_dp", store.METRIC)
    # Assert: each hospital's loss curve is its own, by round
    loss_b = frame[(frame.hospital == "hospital_b") & (frame.series == "train_loss")]
    assert list(loss_b["round"]) == [1, 2, 3, 4, 5]
    assert list(loss_b["value"]) == pytest.approx([store.train_loss(r, 1) for r in range(1, 6)])
    # hospital_c trained in every round but the one it dropped out of
    loss_c = frame[(frame.hospital == "hospital_c") & (frame.series == "train_loss")]
    assert list(loss_c["round"]) == [1, 2, 4, 5]
    val_a = frame[(frame.hospital == "hospital_a") & (frame.series == f"val_{store.METRIC}")]
    assert list(val_a["value"]) == pytest.approx([store.val_score(r, 0) for r in range(1, 6)])
    glob = frame[(frame.hospital == data.GLOBAL) & (frame.series == f"val_{store.METRIC}")]
    assert glob["value"].iloc[-1] == pytest.approx(sum(store.val_score(5, i) for i in range(3)) / 3)
    assert set(frame.hospital) == {*store.HOSPITALS, data.GLOBAL}


def test_a_gans_loss_parts_are_curves_of_their_own(tmp_path: Path) -> None:
    # Prepare: two rounds with the generator's loss, as train_federated logs a GAN's
    _, client, exp_id = store.open_store(tmp_path)
    run_id = store.start_pipeline_run(client, exp_id)
    for r in (1, 2):
        store.log_round(client, run_id, r)
        parts = {"federated_dp.generator_loss": 0.5 * r}
        parts |= {f"federated_dp.{h}.generator_loss": r + i for i, h in enumerate(store.HOSPITALS)}
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, r) for k, v in parts.items()],
        )
    run = client.get_run(run_id)
    # Execute
    frame = data.curves(client, run, "federated_dp", store.METRIC)
    # Assert: a series per part, global and per hospital; val_loss is not a part
    assert data.loss_parts(run.data.metrics, "federated_dp") == ["generator_loss"]
    glob = frame[(frame.hospital == data.GLOBAL) & (frame.series == "generator_loss")]
    assert list(glob["value"]) == [0.5, 1.0]
    last = frame[(frame.hospital == store.HOSPITALS[-1]) & (frame.series == "generator_loss")]
    assert list(last["value"]) == [3.0, 4.0]


def test_epsilon_per_hospital_against_the_budget(finished: tuple[MlflowClient, str]) -> None:
    client, run_id = finished
    frame, budget = data.epsilon_curves(client, client.get_run(run_id), "federated_dp")
    assert budget == store.BUDGET
    eps_b = frame[frame.hospital == "hospital_b"]
    assert list(eps_b["round"]) == [1, 2, 3, 4, 5]
    assert list(eps_b["epsilon"]) == pytest.approx([store.epsilon(r, 1) for r in range(1, 6)])
    # the run's figure (the max over hospitals) is there too
    assert frame[frame.hospital == data.GLOBAL]["epsilon"].iloc[-1] == pytest.approx(
        store.epsilon(5, 2)
    )


def test_participation_shows_who_dropped_out(finished: tuple[MlflowClient, str]) -> None:
    client, run_id = finished
    frame = data.participation(client, client.get_run(run_id), "federated_dp")
    absent = frame[~frame.took_part]
    assert list(zip(absent["round"], absent["hospital"], strict=True)) == [(3, "hospital_c")]
    assert len(frame) == 5 * len(store.HOSPITALS)


def test_round_costs_sum_bytes_over_the_hospitals_that_took_part(
    finished: tuple[MlflowClient, str],
) -> None:
    client, run_id = finished
    frame = data.round_costs(client, client.get_run(run_id), "federated_dp").set_index("round")
    assert frame.loc[2, "seconds"] == 4.0
    assert frame.loc[2, "bytes_sent"] == 1000.0 * (1 + 2 + 3)
    assert frame.loc[3, "bytes_received"] == 2000.0 * (1 + 2)  # hospital_c dropped out


def test_comparison_table_and_audit(finished: tuple[MlflowClient, str]) -> None:
    client, run_id = finished
    frame, metrics = data.comparison(client, run_id)
    assert metrics == ["macro_auroc", "accuracy"]
    assert list(frame.index) == list(store.COMPARISON)
    assert frame.loc["federated_dp", "macro_auroc"] == 0.75
    assert frame.loc["federated_dp", "epsilon"] == 3.9
    assert math.isinf(frame.loc["centralized", "epsilon"])  # "inf" in the JSON: no DP bound
    # the audit metric register_model logged
    audit = data.membership_audit(client, client.get_run(run_id))
    assert audit.to_dict("records") == [
        {"model": "federated_dp", "figure": "loss_threshold_auroc", "value": 0.51}
    ]


def test_audit_falls_back_to_the_comparison_json(tmp_path: Path) -> None:
    # Prepare: a run whose registration logged no audit.* metrics
    _, client, exp_id = store.open_store(tmp_path)
    run_id = store.start_pipeline_run(client, exp_id)
    store.finish_pipeline_run(client, run_id, with_audit_metrics=False)
    # Execute
    audit = data.membership_audit(client, client.get_run(run_id))
    # Assert
    rows = {(r["model"], r["figure"]): r["value"] for r in audit.to_dict("records")}
    assert rows == {
        ("federated", "loss_threshold_auroc"): 0.58,
        ("federated", "loss_threshold_tpr_at_1pct_fpr"): 0.03,
        ("federated_dp", "loss_threshold_auroc"): 0.51,
        ("federated_dp", "loss_threshold_tpr_at_1pct_fpr"): 0.011,
    }


def test_figures_and_markdown_reports(finished: tuple[MlflowClient, str]) -> None:
    client, run_id = finished
    pngs = data.figures(client, run_id)
    # the task's figure in the report and the plot; not the validation Data Docs' logos
    assert [p for p, _ in pngs] == [
        "plots/federated_rounds.png",
        "reports/evaluation/figures/overlay.png",
    ]
    assert pngs[0][1].startswith(b"\x89PNG")
    reports = data.markdown_reports(client, run_id)
    assert [p for p, _ in reports] == ["reports/evaluation/comparison.md"]
    assert reports[0][1].startswith("# Model comparison")


def test_registry_versions_carry_aliases_gate_reasons_and_card(
    finished: tuple[MlflowClient, str],
) -> None:
    client, run_id = finished
    (version,) = data.registry_versions(client, [run_id])
    assert (version["name"], version["version"]) == (store.MODEL_NAME, "1")
    assert version["aliases"] == ["challenger"]
    assert version["promotion_reason"] == store.GATE_REASON
    assert version["gate"] == {"split": "val", "utility_ratio": "0.926"}
    assert version["model_card"] == store.MODEL_CARD
    assert data.registry_versions(client, ["another-run"]) == []


def test_the_dashboard_waits_for_a_store_without_creating_it(tmp_path: Path) -> None:
    """Opening a SQLite store creates it; the dashboard racing `make run`'s first stage to
    create the same tables made that stage fail ("table … already exists")."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    # Execute / Assert: no store yet, and looking made none
    assert not data.store_has_experiment(uri, store.EXPERIMENT)
    assert not (tmp_path / "store" / "mlflow.db").exists()
    # a pipeline made the store and its experiment
    store.open_store(tmp_path / "store")
    assert data.store_has_experiment(uri, store.EXPERIMENT)
    assert not data.store_has_experiment(uri, "another")
    assert data.store_has_experiment("http://127.0.0.1:5000", store.EXPERIMENT)  # a server
