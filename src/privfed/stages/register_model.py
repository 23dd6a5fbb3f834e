"""Stage ``register_model``: log the run to MLflow, register the candidate, gate promotion.

The gate reads the pooled validation split by default (``register_model.gate_split``): the test
split is for reporting, and deciding on test then reporting test is selection on test; a single
DP run's test score is also one noisy draw. The model card shows both splits and says which one
the gate read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed import __version__
from privfed.checkpoints import MODEL_FILE, load_model
from privfed.config import PrivFedConfig
from privfed.federated import ROUNDS_FILE
from privfed.io import atomic_dir, read_json, write_json, write_text
from privfed.registry import (
    REGISTRATION_TAG,
    TASK_TAG,
    check_model_task,
    current_champion,
    data_version,
    git_commit,
    metric_chart_route,
    promotion_gate,
    ratio_range,
    recover_interrupted,
    registration_owner,
    tracking_uri,
    tree_version,
    utility_ratio,
)
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task
from privfed.tracking import PipelineRun, RoundLog, metric_key, open_pipeline_run
from privfed.tracking import current as current_pipeline_run
from privfed.training import (
    dp_batch_size,
    dp_local_epochs,
    dp_lr,
    dp_max_grad_norm,
    dp_trainable,
)

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=(
        "base",
        "generate_data.n_genes",  # the model's input shape (loading the candidate)
        "ingest_data",  # the tabular schema (also the model's input shape)
        "model",
        "train.selection",  # the card says which round's model the version is
        "train_federated",  # the model card describes the federation
        "privacy",
        "register_model",
        "profiles",
    ),
    inputs={
        "validation": "reports/validation",
        "centralized": "models/centralized",
        "federated": "models/federated",
        "privacy": "metrics/privacy.json",
        "evaluation": "metrics/evaluation.json",
        "report": "reports/evaluation",
        "plots": "plots",
        "dvc_lock": "dvc.lock",  # DVC writes it, so it is no dependency in dvc.yaml
    },
    outputs={"registration": "reports/registration"},
    alternative_inputs={"data": "dvc_lock"},
)


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def gate_scores(summary: Mapping[str, Any], split: str) -> Mapping[str, Any]:
    """Model name -> pooled primary metric on ``split``, from the evaluation summary.

    Raises:
        ValueError: ``split`` is val and the summary holds no validation scores (an evaluation
            written before evaluate_models scored the val split).
    """
    if split == "test":
        return summary
    if "val" not in summary:
        raise ValueError(
            "metrics/evaluation.json has no validation-split scores (summary.val) but "
            "register_model.gate_split is 'val': rerun evaluate_models, or set gate_split: test"
        )
    return summary["val"]


def central_seed_scores(summary: Mapping[str, Any], split: str) -> list[float]:
    """Each centralized seed's pooled primary metric on ``split`` (the mean of which is the
    summary's ``centralized``); empty for an evaluation written before seeds were recorded."""
    return list(summary.get("centralized_seeds", {}).get(split, {}).get("scores", []))


def _curves_note(
    run_id: str, experiment: str, rounds: dict[str, Any], metric: str, uri: str
) -> str:
    """Markdown linking the MLflow UI's per-round charts (step = round); logged with the URL.

    MLflow lists a run's metrics alphabetically, single-value ones (``audit.*``) first: the
    description is where the per-round curves can be put in front of a user.
    """
    every_run = metric_chart_route(run_id, experiment, [f"{name}.{metric}" for name in rounds])
    lines = [f"**Per-round validation `{metric}`** (step = federated round):", ""]
    lines.append(f"- [{' vs '.join(rounds)}](#{every_run})")
    for name, run in rounds.items():
        hospitals = sorted(run["rounds"][-1].get("val_per_hospital", {}))
        keys = [f"{name}.{h}.val_{metric}" for h in hospitals]
        if keys:
            lines.append(
                f"- [{name}, per hospital](#{metric_chart_route(run_id, experiment, keys)})"
            )
    lines.append(
        f"- [{', '.join(rounds)}: train loss](#"
        + metric_chart_route(run_id, experiment, [f"{n}.train_loss" for n in rounds])
        + ")"
    )
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    log.info("per-round curves in the MLflow UI: %s/#%s", base, every_run)
    return "\n".join(lines)


def _split_lines(summary: Mapping[str, Any], candidate: str, split: str, higher: bool) -> str:
    """The candidate's and the centralized model's val and test scores, and which one gated."""
    val = summary.get("val", {})
    rows = []
    for name in (candidate, "centralized"):
        rows.append(
            f"  - `{name}`: val {_fmt(_float(val.get(name)))}, "
            f"test {_fmt(_float(summary.get(name)))}"
        )
    ratios = {
        s: utility_ratio(
            _float(scores.get(candidate)),
            _float(scores.get("centralized")),
            higher_is_better=higher,
        )
        for s, scores in (("val", val), ("test", summary))
    }
    return (
        f"- The gate read the pooled **{split}** split (register_model.gate_split); "
        + (
            "test is for reporting only"
            if split == "val"
            else "deciding on test and reporting test is selection on test"
        )
        + f"\n- `{summary['primary_metric']}` on both splits:\n"
        + "\n".join(rows)
        + f"\n- Utility ratio to centralized: val {_fmt(ratios['val'])}, "
        f"test {_fmt(ratios['test'])}" + _seed_line(summary, candidate, split, higher)
    )


def _seed_line(summary: Mapping[str, Any], candidate: str, split: str, higher: bool) -> str:
    """The centralized baseline's seeds and the ratio's range over them, on the gate's split."""
    scores = central_seed_scores(summary, split)
    if len(scores) < 2:
        return ""
    low, high = ratio_range(
        _float(gate_scores(summary, split).get(candidate)), scores, higher_is_better=higher
    )
    return (
        f"\n- Centralized is the mean of {len(scores)} seeds (train_centralized.seeds) on "
        f"{split}: {', '.join(_fmt(v) for v in scores)}; the ratio to each seed ranges "
        f"{_fmt(low)}–{_fmt(high)}"
    )


def _hospitals(evaluation: dict[str, Any], rounds: Mapping[str, Any], candidate: str) -> list[str]:
    """The hospitals whose updates trained the candidate, from its rounds (what took part).

    Without a record of the candidate's rounds: the hospitals with a local-only model.
    """
    trained = {h for row in rounds.get(candidate, {}).get("rounds", []) for h in row["train"]}
    if trained:
        return sorted(trained)
    return sorted(n.split(":", 1)[1] for n in evaluation["models"] if n.startswith("local:"))


def _events(rounds: Mapping[str, Any], kind: str) -> dict[str, dict[str, dict[str, str]]]:
    """run -> round -> hospital -> reason, for ``kind`` "rejected" (screening) or "dropouts"."""
    return {
        name: {str(row["round"]): row[kind] for row in run["rounds"] if row.get(kind)}
        for name, run in rounds.items()
    }


def _per_hospital(events: Mapping[str, Any]) -> str:
    """``hospital_3 ×2, hospital_5 ×1``: how often each hospital appears in ``events``."""
    counts: dict[str, int] = {}
    for run in events.values():
        for hospitals in run.values():
            for hospital in hospitals:
                counts[hospital] = counts.get(hospital, 0) + 1
    return ", ".join(f"{h} ×{n}" for h, n in sorted(counts.items())) or "none"


def _screening_line(cfg: PrivFedConfig, rejections: Mapping[str, Any]) -> str:
    fed = cfg.train_federated
    if not fed.screen_updates:
        return "off"
    return (
        f"on (norm bound {fed.screen_norm_factor:g} × the round's median); "
        f"rejected: {_per_hospital(rejections)}"
    )


#: Audit figures the card shows per model (keys of the evaluate stage's audit summary).
AUDIT_COLUMNS = (
    ("loss_threshold_auroc", "loss-threshold AUROC"),
    ("loss_threshold_tpr_at_1pct_fpr", "loss-threshold TPR@1%FPR"),
    ("lira_offline_auroc", "LiRA AUROC"),
    ("lira_offline_tpr_at_1pct_fpr", "LiRA TPR@1%FPR"),
)


def _dp_lines(cfg: PrivFedConfig, privacy: Mapping[str, Any], candidate: str) -> str:
    """ε, δ, accountants, clipping, noise and steps of the DP run, as the accountant saw them."""
    if candidate != "federated_dp" or not privacy.get("enabled"):
        return "- Differential privacy: off for this candidate (ε = ∞)"
    per = privacy.get("hospitals", {})
    task = get_task(cfg.base.task, cfg)
    accountants = ", ".join(cfg.privacy.accountants)
    lines = [
        "- Differential privacy: on — Opacus DP-SGD at every hospital, per-example clipping, "
        "Gaussian noise; one accountant history per hospital carried across rounds",
        f"- ε = {_fmt(_float(privacy.get('epsilon')))} at δ = {privacy.get('delta')} "
        f"(max over hospitals; the {cfg.privacy.accountant} accountant calibrated the noise "
        f"and decides ε; accountants {accountants} per hospital below; "
        f"budget {cfg.privacy.epsilon_budget:g})",
        f"- Clipping norm (max_grad_norm): {dp_max_grad_norm(task, cfg):g}; batch "
        f"{dp_batch_size(task, cfg)}, step size {dp_lr(task, cfg):g}; rounds: "
        f"{privacy.get('rounds')} × {dp_local_epochs(cfg)} local epoch(s)",
        f"- Unit of privacy: {task.privacy_unit}",
        *_patient_lines(privacy, task.example_noun),
        "- What ε covers: this model and every update its run sent to the server. "
        + (
            "The same pipeline also trained a non-DP federation on the same patients "
            "(privacy.non_dp_run): the server saw those updates un-noised, so against the "
            "server ε holds only with privacy.non_dp_run: false"
            if cfg.privacy.non_dp_run
            else "No non-DP federation ran on these patients (privacy.non_dp_run: false): "
            "the server saw only DP-SGD updates"
        ),
        f"- Started from: {task.init_description()}; DP-SGD trained "
        + (
            "every parameter"
            if (parts := dp_trainable(task, cfg)) is None
            else "only the parameters under " + ", ".join(f"`{m}`" for m in parts)
        ),
    ]
    for hospital, info in sorted(per.items()):
        by = ", ".join(f"{k} {_fmt(_float(v))}" for k, v in info.get("by_accountant", {}).items())
        lines.append(
            f"- {hospital}: noise multiplier {_fmt(_float(info.get('noise_multiplier')))}, "
            f"sample rate {_fmt(_float(info.get('sample_rate')))}, {info.get('steps')} steps, "
            f"ε {_fmt(_float(info.get('epsilon')))} ({by})"
            + _hospital_patient(info, task.example_noun)
        )
    return "\n".join(lines)


def _hospital_patient(info: Mapping[str, Any], noun: str) -> str:
    """``; per patient (up to 3 notes) ε 24, δ 0.0…`` where the hospital's examples were counted."""
    k, patient = info.get("examples_per_patient"), info.get("patient_level") or {}
    if k is None:
        return ""
    return (
        f"; per patient (up to {k} {noun}{'s' if k != 1 else ''}) "
        f"ε {_fmt(_float(patient.get('epsilon')))}, δ {_fmt(_float(patient.get('delta')))}"
    )


def _patient_lines(privacy: Mapping[str, Any], noun: str) -> list[str]:
    """The per-patient guarantee where the task counted a patient's examples (group privacy)."""
    patient = privacy.get("patient_level") or {}
    k = patient.get("examples_per_patient")
    if k is None:  # the task's example is its patient: the guarantee above is per patient
        return []
    delta = _float(patient.get("delta"))
    return [
        f"- Per patient (group privacy over a patient's {noun}s, not a per-patient accountant): "
        f"per {noun} ε = {_fmt(_float(privacy.get('epsilon')))}, δ = {privacy.get('delta')}; "
        f"a patient with up to {k} {noun}{'s' if k != 1 else ''} (the most one patient has in "
        f"a hospital's training split): ε = {_fmt(_float(patient.get('epsilon')))}, "
        f"δ = {_fmt(delta)}" + (" (δ = 1: the group bound promises nothing)" if delta >= 1 else "")
    ]


def _fmt(value: float) -> str:
    return "∞" if math.isinf(value) else ("n/a" if math.isnan(value) else f"{value:.3g}")


def audit_lines(audits: Mapping[str, Mapping[str, float]], epsilons: Mapping[str, float]) -> str:
    """The membership-inference audit of the global models, as a Markdown table."""
    if not audits:
        return "Not run (evaluate_models.membership_audit is off)."
    header = ["model", "ε", *(title for _, title in AUDIT_COLUMNS)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, audit in audits.items():
        cells = [_fmt(float(audit[key])) for key, _ in AUDIT_COLUMNS]
        rows.append(
            f"| {name} | {_fmt(epsilons.get(name, math.inf))} | " + " | ".join(cells) + " |"
        )
    return (
        "Attacks that see only a model's loss on a patient try to tell training patients "
        "(members) from the test split (non-members); AUROC 0.5 = cannot tell. An (ε, δ)-DP "
        "model caps any attack at TPR ≤ e^ε·FPR + δ.\n\n" + "\n".join(rows)
    )


def _kept_line(cfg: PrivFedConfig, selected: int | None) -> str:
    """Which round's global model this version is (``train.selection``)."""
    if selected is None:
        return "the round kept is not recorded"
    rule = (
        "the best mean validation score over hospitals"
        if cfg.train.selection == "best_val"
        else "the last round"
    )
    return f"this is the global model after round {selected} ({rule}, train.selection)"


def _alias_note(alias: str) -> str:
    """What the alias means for a reader about to load the model."""
    if alias == "champion":
        return "; `models:/<name>@champion` loads the same model until another version is promoted"
    return ": not promoted, `@champion` loads another version or none"


def model_card(
    cfg: PrivFedConfig,
    summary: dict[str, Any],
    decision: Any,
    *,
    version: str,
    data_hash: str,
    commit: str,
    table: str,
    rejections: Mapping[str, Any] | None = None,
    dropouts: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
    audits: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    candidate = cfg.register_model.candidate
    reasons = "\n".join(f"- {r}" for r in decision.reasons) or "- all checks passed"
    notes = "\n".join(f"- Note: {n}" for n in decision.notes)
    require_dp = str(cfg.register_model.require_dp).lower()
    floor = cfg.register_model.metric_floor.get(cfg.base.task, "none")
    higher = get_task(cfg.base.task, cfg).higher_is_better
    split = _split_lines(summary, candidate, cfg.register_model.gate_split, higher)
    dp_run = candidate == "federated_dp" and cfg.privacy.enabled
    local_epochs = dp_local_epochs(cfg) if dp_run else cfg.train_federated.local_epochs
    return f"""# Model card: {cfg.register_model.model_name} v{version}

- Task: `{cfg.base.task}` (primary metric `{summary["primary_metric"]}`)
- Candidate: `{candidate}` — trained with Flower across {len(summary["hospitals"])} hospitals
  ({", ".join(summary["hospitals"])}),
  strategy `{cfg.train_federated.strategy}`, {cfg.train_federated.rounds} rounds ×
  {local_epochs} local epoch(s); {_kept_line(cfg, summary.get("selected_round"))}
- Update screening: {_screening_line(cfg, rejections or {})}
- Dropouts (hospitals that missed a round's deadline, per run): {_per_hospital(dropouts or {})}
- Data version (dvc.lock; on Kubeflow the validated dataset's content hash): `{data_hash}`
- Code: `{commit}`; privfed {__version__}

## Privacy
{_dp_lines(cfg, privacy or {}, candidate)}

### Membership-inference audit
{audit_lines(audits or {}, {"federated_dp": _float((privacy or {}).get("epsilon"))})}

## Promotion decision: `{decision.alias}`
{reasons}
{notes}
{split}
- DP required for promotion (register_model.require_dp): {require_dp};
  floor on `{summary["primary_metric"]}` (register_model.metric_floor): {floor}

## Evaluation
{table}
## Loading
This version, a `{summary.get("released", "model")}`:
`mlflow.pytorch.load_model("models:/{cfg.register_model.model_name}/{version}")`
(it holds alias `{decision.alias}`{_alias_note(decision.alias)}), in an environment with
`privfed` installed and task `{cfg.base.task}` registered (its `task.py` defines the network).

## Intended use and limits
Research use. Trained on the data version above (the synthetic generator unless the consortium
ingested its own records). Not a medical device; check calibration at each hospital before any
clinical use.
"""


def _backfill(
    pipeline: PipelineRun,
    logged: Mapping[str, str],
    rounds: Mapping[str, Any],
    inputs: Mapping[str, Path],
) -> None:
    """Log what the earlier stages did not log into the pipeline run as they ran (they were
    cached, ran with ``register_model.live`` off, or the tracking store failed mid-run)."""
    for name, run_rounds in rounds.items():
        if logged.get(f"privfed.federation.{name}") != "done":
            RoundLog(pipeline, name).rows(run_rounds["rounds"])
    if logged.get("privfed.stage.evaluate_models") != "done":
        pipeline.log_outputs(
            {"report": "reports/evaluation", "plots": "plots"},
            {"report": Path(inputs["report"]), "plots": Path(inputs["plots"])},
        )


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    task = get_task(cfg.base.task, cfg)
    r = cfg.register_model
    root = Path.cwd()
    validation = read_json(Path(inputs["validation"]) / "report.json")
    evaluation = read_json(inputs["evaluation"])
    privacy = read_json(inputs["privacy"])
    summary = evaluation["summary"]
    candidate = r.candidate
    epsilon = _float(privacy.get("epsilon")) if candidate == "federated_dp" else math.inf
    candidate_path = Path(inputs["federated"]) / candidate / MODEL_FILE
    model = load_model(candidate_path, cfg)
    # DVC runs hash dvc.lock's data entries; Kubeflow runs pass the validated dataset instead.
    data_hash = (
        tree_version(Path(inputs["data"]))
        if "data" in inputs
        else data_version(Path(inputs["dvc_lock"]))
    )
    commit = git_commit(root)
    uri = tracking_uri(r.tracking_uri, root)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    check_model_task(client, r.model_name, task.name)  # before anything is logged
    scores = gate_scores(summary, r.gate_split)
    decision = promotion_gate(
        candidate_metric=scores.get(candidate),
        central_metric=float(scores["centralized"]),
        min_ratio=r.min_ratio_to_central,
        epsilon=epsilon,
        epsilon_budget=cfg.epsilon_budget,
        validation_passed=bool(validation.get("success")),
        higher_is_better=task.higher_is_better,
        floor=r.metric_floor.get(task.name),
        trained_with_dp=candidate == "federated_dp",
        require_dp=r.require_dp,
        champion=current_champion(client, r.model_name),
        data_version=data_hash,
        split=r.gate_split,
        central_scores=central_seed_scores(summary, r.gate_split),
    )
    # the pipeline's run, which the earlier stages logged into (or a new one: every stage before
    # this one was cached, or register_model.live is off)
    pipeline = current_pipeline_run() or open_pipeline_run(cfg, root)
    exp_id = pipeline.experiment_id
    for closed in recover_interrupted(client, exp_id, r.model_name):
        log.warning("closed what an interrupted registration left: %s (marked failed)", closed)
    rounds_file = Path(inputs["federated"]) / ROUNDS_FILE
    rounds = read_json(rounds_file) if rounds_file.is_file() else {}
    table = (Path(inputs["report"]) / "comparison.md").read_text()
    # the global models' membership-inference audits (local-only models are in the report)
    audits = {
        name: model["membership_audit"]
        for name, model in evaluation["models"].items()
        if "membership_audit" in model and not name.startswith("local:")
    }

    logged = pipeline.tags()
    with mlflow.start_run(run_id=pipeline.run_id) as run:
        # first: a kill from here on is recoverable by the next registration
        mlflow.set_tags({REGISTRATION_TAG: "pending", **registration_owner()})
        mlflow.set_tags(
            {
                "data_version": data_hash,
                "git_commit": commit,
                "task": task.name,
                "candidate": candidate,
                "privfed_version": __version__,
            }
        )
        mlflow.log_metrics(
            {
                f"eval.{k}": float(v)
                for k, v in summary.items()
                if isinstance(v, int | float) and math.isfinite(v)
            }
        )
        mlflow.log_metrics(
            {
                f"eval.val.{metric_key(name)}": float(v)
                for name, v in summary.get("val", {}).items()
                if isinstance(v, int | float) and math.isfinite(v)
            }
        )
        _backfill(pipeline, logged, rounds, inputs)
        if rounds:  # the run's description, the first thing its page shows: the curves
            mlflow.set_tag(
                "mlflow.note.content",
                _curves_note(run.info.run_id, exp_id, rounds, task.primary_metric, uri),
            )
        mlflow.log_dict(_events(rounds, "rejected"), "federation/rejected_updates.json")
        mlflow.log_dict(_events(rounds, "dropouts"), "federation/dropouts.json")
        for run_name, run_rounds in rounds.items():
            for hospital, at_round in run_rounds.get("dropouts", {}).items():
                mlflow.set_tag(f"dropout.{run_name}.{hospital}", f"round {at_round}")
        for h, info in privacy.get("hospitals", {}).items():
            mlflow.log_metric(f"privacy.epsilon.{h}", _float(info["epsilon"]))
            if info.get("examples_per_patient") is not None:  # counted: group privacy
                mlflow.log_metric(f"privacy.examples_per_patient.{h}", info["examples_per_patient"])
                for key in ("epsilon", "delta"):
                    mlflow.log_metric(
                        f"privacy.patient_{key}.{h}", _float(info["patient_level"][key])
                    )
        for name, audit in audits.items():
            for key, value in audit.items():
                mlflow.log_metric(f"audit.{name}.{key}", float(value))
        # pickle: the class lives in the installed privfed package (torch.export's pt2 format
        # would need an input example per modality and gains nothing for our consumers).
        released = task.released_model(model)  # e.g. a GAN's generator alone
        info = mlflow.pytorch.log_model(
            released,
            name="model",
            registered_model_name=r.model_name,
            serialization_format="pickle",
            pip_requirements=[f"torch=={__import__('torch').__version__.split('+')[0]}"],
        )
        version = str(info.registered_model_version)
        card = model_card(
            cfg,
            {
                **summary,
                "epsilon": epsilon,
                "hospitals": _hospitals(evaluation, rounds, candidate),
                "released": type(released).__name__,
                "selected_round": rounds.get(candidate, {}).get("selected_round"),
            },
            decision,
            version=version,
            data_hash=data_hash,
            commit=commit,
            table=table,
            rejections=_events(rounds, "rejected"),
            dropouts=_events(rounds, "dropouts"),
            privacy=privacy,
            audits=audits,
        )
        mlflow.log_text(card, "model_card.md")
        run_id = run.info.run_id
    client.set_registered_model_tag(r.model_name, TASK_TAG, task.name)
    client.set_registered_model_alias(r.model_name, decision.alias, version)
    client.update_model_version(r.model_name, version, description=card)
    client.set_model_version_tag(
        r.model_name,
        version,
        "promotion_reason",
        "; ".join(decision.reasons) or "passed all gate checks",
    )
    for key, value in decision.checks.items():
        client.set_model_version_tag(r.model_name, version, f"gate.{key}", str(value))
    client.set_model_version_tag(r.model_name, version, "data_version", data_hash)
    client.set_model_version_tag(r.model_name, version, REGISTRATION_TAG, "complete")
    pipeline.set_tags(
        {
            REGISTRATION_TAG: "complete",
            "privfed.gate": decision.alias,
            "privfed.gate_reasons": "; ".join(decision.reasons),
            "privfed.model_version": version,
        }
    )
    # another registration on the same store may have moved the alias since: report what holds
    champion = current_champion(client, r.model_name)
    result = {
        "tracking_uri": uri,
        "run_id": run_id,
        "model_name": r.model_name,
        "version": version,
        "alias": decision.alias,
        "promoted": decision.promote,
        "champion_version": champion.version if champion is not None else None,
        "reasons": decision.reasons,
        "notes": decision.notes,
        "checks": decision.checks,
        "data_version": data_hash,
        "git_commit": commit,
    }
    with atomic_dir(outputs["registration"]) as tmp:
        write_json(result, tmp / "registration.json")
        write_text(card, tmp / "model_card.md")
    log.info(
        "registered %s v%s as %s%s",
        r.model_name,
        version,
        decision.alias,
        "" if decision.promote else f" ({'; '.join(decision.reasons)})",
    )
    return result
