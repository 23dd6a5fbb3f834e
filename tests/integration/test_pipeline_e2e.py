"""`dvc repro` of the whole tiny pipeline with real Flower processes and a real MLflow server."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
import yaml
from mlflow import MlflowClient

from privfed.config import STAGES
from privfed.offline import remote_references
from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration


def _json(project: Path, rel: str) -> dict:
    return json.loads((project / rel).read_text())


def _repro_watching_rounds(project: Path, env: dict[str, str], uri: str) -> dict[str, set[int]]:
    """``dvc repro``, polling MLflow meanwhile: per federation, the rounds N whose training
    figures the server had while round N+1 was still running (its checkpoint not yet written)."""
    client = MlflowClient(tracking_uri=uri)
    early: dict[str, set[int]] = {"federated": set(), "federated_dp": set()}
    with open(project / "repro.out", "w") as out, open(project / "repro.err", "w") as err:
        proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            time.sleep(0.2)
            experiment = client.get_experiment_by_name("privfed")
            if experiment is None:
                continue
            runs = client.search_runs(
                [experiment.experiment_id], filter_string="tags.`privfed.kind` = 'pipeline'"
            )
            for name, rounds in early.items():
                for run_ in runs:
                    for m in client.get_metric_history(run_.info.run_id, f"{name}.train_loss"):
                        nxt = f"*/{name}/checkpoints/round_{m.step + 1:03d}.pt"
                        if not any((project / "models").glob(nxt)):
                            rounds.add(m.step)
    stdout, stderr = (project / "repro.out").read_text(), (project / "repro.err").read_text()
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    return early


def test_dvc_repro_end_to_end(project: Path, mlflow_server: str) -> None:
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    set_params(project, {"profiles.tiny.register_model.min_ratio_to_central": 0.01})

    # Execute: the whole pipeline, watched from the MLflow server while it runs
    early = _repro_watching_rounds(project, env, mlflow_server)

    # Every model on every test set, DP run included
    evaluation = _json(project, "metrics/evaluation.json")
    models = set(evaluation["models"])
    assert {"centralized", "federated", "federated_dp"} <= models
    # ... and the public-only model they all started from (model.init: public), at ε 0
    assert "public_only" in models and "membership_audit" not in evaluation["models"]["public_only"]
    # the global and reference models also on the pooled val split (what the gate reads)
    assert set(evaluation["summary"]["val"]) == {
        "centralized",
        "federated",
        "federated_dp",
        "public_only",
    }
    assert {f"local:hospital_{i}" for i in (1, 2, 3)} <= models
    # the centralized baseline is the mean of its seeds (tiny: 42 and 43), each one scored
    seeds = evaluation["summary"]["centralized_seeds"]["val"]
    assert len(seeds["scores"]) == 2 and "centralized:seed43" not in models
    seed43 = _json(project, "reports/evaluation/comparison.json")["centralized:seed43"]
    assert seed43["val"]["macro_auroc"] in seeds["scores"]
    assert evaluation["summary"]["val"]["centralized"] == pytest.approx(sum(seeds["scores"]) / 2)
    report = (project / "reports/evaluation/comparison.md").read_text()
    # each local model: a row in the comparison, in the per-hospital tables (primary metric
    # and accuracy) and in the membership-inference audit
    comparison, rest = report.split("## Per hospital", 1)
    per_hospital, audit = rest.split("## Membership-inference audit", 1)
    assert comparison.count("| local:") == 3 and audit.count("| local:") == 3
    assert "### accuracy" in per_hospital and per_hospital.count("| local:") == 6
    assert (project / "plots/federated_rounds.png").stat().st_size > 1000
    assert (project / "plots/per_hospital.png").stat().st_size > 1000

    # Offline viewing: `dvc plots show` with the template `make install` writes, and the
    # validation report, load nothing from the internet (a hospital network has none)
    made = run([str(project / ".venv/bin/python"), "-m", "privfed.offline"], project, env)
    assert made.returncode == 0, made.stderr[-2000:]
    shown = run(["dvc", "plots", "show", "-o", "plots-page"], project, env)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    page = (project / "plots-page/index.html").read_text()
    assert "vegaEmbed('#plots_federated_rounds_json'" in page and "window.vegaEmbed=" in page
    validation = (project / "reports/validation/report.html").read_text()
    assert "passed</span></h1>" in validation and "hospital_3" in validation
    assert remote_references(page) == [] and remote_references(validation) == []

    # Federated run: all rounds, one checkpoint per round, each hospital reported every round
    rounds = _json(project, "models/federated/rounds.json")
    for name in ("federated", "federated_dp"):
        assert rounds[name]["rounds_completed"] == 2
        assert sorted(
            p.name for p in (project / f"models/federated/{name}/checkpoints").iterdir()
        ) == ["round_001.pt", "round_002.pt"]
        for row in rounds[name]["rounds"]:
            assert set(row["val_per_hospital"]) == {"hospital_1", "hospital_2", "hospital_3"}
        # model.pt is the round whose global model scored best on the hospitals' val splits
        scores = [row["val"]["macro_auroc"] for row in rounds[name]["rounds"][1:]]
        selected = rounds[name]["selected_round"]
        assert selected == 1 + scores.index(max(scores))
        kept = torch.load(project / f"models/federated/{name}/model.pt")["state_dict"]
        checkpoint = project / f"models/federated/{name}/checkpoints/round_{selected:03d}.pt"
        assert all(torch.equal(v, torch.load(checkpoint)["state_dict"][k]) for k, v in kept.items())
    # Each SuperNode's ClientApp worked only on its own hospital's data
    logs = project / "models/federated/logs"
    for i in (1, 2, 3):
        text = (logs / f"executor-hospital_{i}.log").read_text()
        assert f"hospital_{i} round 1" in text
        assert all(f"hospital_{j} round" not in text for j in (1, 2, 3) if j != i)

    # Privacy: ε per hospital, within budget, and the DP history composes both rounds
    privacy = _json(project, "metrics/privacy.json")
    assert set(privacy["hospitals"]) == {"hospital_1", "hospital_2", "hospital_3"}
    assert 0 < privacy["epsilon"] <= privacy["budget"]
    assert all(h["steps"] > 0 for h in privacy["hospitals"].values())

    # Registry: the real server has the run, the version, its alias and model card
    registration = _json(project, "reports/registration/registration.json")
    assert registration["tracking_uri"] == mlflow_server
    assert registration["alias"] == "champion", registration["reasons"]
    assert registration["checks"]["split"] == "val"
    low, high = registration["checks"]["utility_ratio_range"]
    assert registration["checks"]["central_seeds"] == 2
    assert low <= registration["checks"]["utility_ratio"] <= high
    assert registration["checks"]["candidate_metric"] == pytest.approx(
        evaluation["summary"]["val"]["federated_dp"]
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("privfed-readmission", "champion")
    assert version.version == registration["version"]
    assert "Model card" in version.description
    # the registration finished: its run and version say so, and it reports the champion
    assert version.tags["registration"] == "complete"
    assert client.get_run(registration["run_id"]).data.tags["registration"] == "complete"
    assert registration["champion_version"] == registration["version"]
    # the card states the DP run's accounting and the membership audit, as measured
    card = version.description
    h1 = privacy["hospitals"]["hospital_1"]
    assert f"at δ = {privacy['delta']}" in card and "accountants rdp, prv" in card
    assert "the prv accountant calibrated the noise" in card
    assert "Started from: the task's public model" in card
    selected = rounds["federated_dp"]["selected_round"]
    assert f"this is the global model after round {selected} (the best mean validation" in card
    assert "Unit of privacy: one patient" in card
    assert "Clipping norm (max_grad_norm): 3; batch 32, step size 0.02; rounds: 2 × 1 local" in card
    assert f"noise multiplier {h1['noise_multiplier']:.3g}" in card
    assert f"{h1['steps']} steps" in card
    audit = evaluation["models"]["federated_dp"]["membership_audit"]
    for model in ("centralized", "federated", "federated_dp"):
        assert f"| {model} |" in card.split("### Membership-inference audit")[1]
    assert f"{audit['lira_offline_auroc']:.3g}" in card
    assert f"{audit['loss_threshold_tpr_at_1pct_fpr']:.3g}" in card
    mlflow_run = client.get_run(registration["run_id"])
    assert mlflow_run.data.params["base.profile"] == "tiny"
    assert mlflow_run.data.tags["data_version"] not in ("", "unversioned")
    assert "eval.centralized" in mlflow_run.data.metrics
    assert "eval.val.federated_dp" in mlflow_run.data.metrics
    assert "The gate read the pooled **val** split" in card
    assert mlflow_run.data.metrics["audit.federated_dp.lira_offline_auroc"] == pytest.approx(
        audit["lira_offline_auroc"]
    )
    history = client.get_metric_history(registration["run_id"], "federated.train_loss")
    assert [m.step for m in history] == [1, 2]
    # ... logged live: round 1's figures were on the server before round 2 ended, in at least
    # one of the two federations (a tiny round may end before the 0.2 s poll sees the first),
    # and they are the figures of the run's record
    assert any(1 in rounds for rounds in early.values()), early
    assert history[0].value == pytest.approx(rounds["federated"]["rounds"][1]["train_loss"])
    # one MLflow run tells the whole story: every stage logged into the registration's run
    stages = {
        k.split(".")[2]: v
        for k, v in mlflow_run.data.tags.items()
        if k.startswith("privfed.stage.")
    }
    assert stages == dict.fromkeys(STAGES, "done"), stages
    assert (
        mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["privfed.gate"] == "champion"
    )
    assert "validate_data.success" not in mlflow_run.data.metrics  # booleans are tags' business
    artifacts = {a.path for a in client.list_artifacts(registration["run_id"], "reports")}
    assert {"reports/validation", "reports/evaluation", "reports/registration"} <= artifacts
    assert client.list_artifacts(registration["run_id"], "data") == []  # never patient data
    eps = client.get_metric_history(registration["run_id"], "federated_dp.hospital_1.epsilon")
    assert [m.step for m in eps] == [1, 2]
    assert eps[-1].value == pytest.approx(privacy["hospitals"]["hospital_1"]["epsilon"], rel=1e-6)
    per_hospital = client.get_metric_history(
        registration["run_id"], "federated.hospital_2.val_macro_auroc"
    )
    assert [m.step for m in per_hospital] == [0, 1, 2]
    # the MLflow UI opens the experiment as model development (not its GenAI pages), and the
    # run's description links charts of per-round metrics that exist, each run a curve
    experiment = client.get_experiment(mlflow_run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = mlflow_run.data.tags["mlflow.note.content"]
    links = [unquote(part.split(")")[0]) for part in note.split("](#")[1:]]
    keys = [json.loads(link.split("plot_metric_keys=")[1].split("&")[0]) for link in links]
    assert keys[0] == ["federated.macro_auroc", "federated_dp.macro_auroc"]
    assert keys[1][:1] == ["federated.hospital_1.val_macro_auroc"] and len(keys[1]) == 3
    for key in {k for group in keys for k in group}:
        assert len(client.get_metric_history(registration["run_id"], key)) >= 2, key
    # and the same per-round, per-hospital rows in metrics/
    fed_metrics = _json(project, "metrics/train_federated.json")["runs"]["federated"]["rounds"]
    assert [r["round"] for r in fed_metrics] == [0, 1, 2]
    assert "val_macro_auroc.hospital_3" in fed_metrics[2]

    # Nothing changed: a second repro runs no stage
    second = run(["dvc", "repro"], project, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Running stage" not in second.stdout, second.stdout

    # A training param changes: only the training stages (and what follows) are stale
    weight_decay = yaml.safe_load((project / "params.yaml").read_text())["train"]["weight_decay"]
    set_params(project, {"train.weight_decay": weight_decay * 2})
    status = run(["dvc", "status", "--json"], project, env)
    stale = set(json.loads(status.stdout))
    assert stale == {"train_centralized", "train_local", "train_federated"}, stale

    # The gate fails: the new version is a challenger with a reason; champion stays
    set_params(
        project,
        {
            "train.weight_decay": weight_decay,
            "profiles.tiny.register_model.min_ratio_to_central": 5.0,
        },
    )
    third = run(["privfed", "register_model"], project, env)
    assert third.returncode == 0, third.stderr[-3000:]
    gated = _json(project, "reports/registration/registration.json")
    assert gated["alias"] == "challenger" and not gated["promoted"]
    assert "below registry min_ratio_to_central=5.0" in gated["reasons"][0]
    challenger = client.get_model_version_by_alias("privfed-readmission", "challenger")
    assert challenger.version == gated["version"] != version.version
    assert "min_ratio_to_central" in challenger.tags["promotion_reason"]
    assert client.get_model_version_by_alias("privfed-readmission", "champion").version == (
        version.version
    )


def test_failed_validation_stops_the_pipeline_and_registers_nothing(
    project: Path, mlflow_server: str
) -> None:
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    set_params(project, {"profiles.tiny.validate_data.min_patients_per_hospital": 500})
    result = run(["dvc", "repro"], project, env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "expectation(s) failed" in output
    assert "expect_table_row_count_to_be_between" in output
    # the offline report says so too (it is written before the stage fails)
    validation = (project / "reports/validation/report.html").read_text()
    assert "FAILED</span></h1>" in validation and "fail</span>" in validation
    assert not (project / "data/partitions").exists()
    assert not any((project / "models").glob("*/model.pt"))
    assert not (project / "models/federated").exists()
    assert MlflowClient(tracking_uri=mlflow_server).search_registered_models() == []
