"""MLflow tracking and the promotion gate.

One MLflow run per pipeline run. The candidate model version gets alias ``champion`` only when
every gate check passes; otherwise ``challenger`` plus a ``promotion_reason`` tag saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

__all__ = [
    "REGISTRATION_TAG",
    "Champion",
    "GateDecision",
    "current_champion",
    "data_version",
    "git_commit",
    "metric_chart_route",
    "promotion_gate",
    "recover_interrupted",
    "tracking_uri",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    checks: dict[str, Any]
    #: What the gate noticed without refusing (e.g. a champion it could not compare with).
    notes: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return "champion" if self.promote else "challenger"


@dataclass(frozen=True)
class Champion:
    """The version holding alias ``champion``, with what its gate recorded (None: not recorded)."""

    version: str
    metric: float | None
    data_version: str | None
    #: The split its gate read; versions registered before the gate recorded one read test.
    split: str = "test"


def utility_ratio(candidate: float, central: float, *, higher_is_better: bool = True) -> float:
    """How the candidate compares with the centralized baseline (≥ 1: at least as good).

    A baseline of exactly 0 (e.g. a Dice of 0 from an under-trained tiny model) gives inf, or
    NaN when both are 0, instead of a ZeroDivisionError that would stop the stage.
    """
    num, den = (candidate, central) if higher_is_better else (central, candidate)
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    return num / den


def ratio_range(
    candidate: float | None, central_scores: Sequence[float], *, higher_is_better: bool = True
) -> list[float]:
    """[low, high]: the candidate's utility ratio to each centralized seed, the extremes
    (empty without a candidate score or seeds)."""
    if candidate is None or math.isnan(candidate) or not central_scores:
        return []
    ratios = [
        utility_ratio(candidate, c, higher_is_better=higher_is_better) for c in central_scores
    ]
    return [min(ratios), max(ratios)]


def promotion_gate(
    *,
    candidate_metric: float | None,
    central_metric: float,
    min_ratio: float,
    epsilon: float,
    epsilon_budget: float,
    validation_passed: bool,
    higher_is_better: bool = True,
    floor: float | None = None,
    trained_with_dp: bool = True,
    require_dp: bool = False,
    champion: Champion | None = None,
    data_version: str | None = None,
    split: str,
    central_scores: Sequence[float] = (),
) -> GateDecision:
    """Decide promotion; every failed check contributes a reason naming the numbers.

    ``candidate_metric`` and ``central_metric`` are both scored on ``split`` (``val`` or
    ``test``, named in every reason). Beside the ratio to the centralized baseline (which a
    poor baseline makes easy to pass), ``floor`` is an absolute bound on the primary metric,
    ``require_dp`` refuses a model trained without DP, and a current ``champion`` scored on the
    same ``data_version`` and ``split`` is never demoted by a worse candidate. A champion scored
    on other data or another split cannot be compared: the gate says so in ``notes`` and
    decides on the other checks. ``central_scores`` are the centralized seeds' scores whose
    mean is ``central_metric``: the ratio to each of them is recorded as the ratio's range.
    """
    reasons = []
    better = (lambda a, b: a > b) if higher_is_better else (lambda a, b: a < b)
    if candidate_metric is None or math.isnan(candidate_metric):
        reasons.append(f"candidate model has no primary metric on the {split} split")
        ratio = math.nan
    else:
        ratio = utility_ratio(candidate_metric, central_metric, higher_is_better=higher_is_better)
        if not ratio >= min_ratio:
            seeds = f", the mean of {len(central_scores)} seeds" if len(central_scores) > 1 else ""
            reasons.append(
                f"utility ratio {ratio:.3f} to centralized on the {split} split "
                f"({candidate_metric:.4f} vs {central_metric:.4f}{seeds}) is below registry "
                f"min_ratio_to_central={min_ratio}"
            )
        if floor is not None and better(floor, candidate_metric):
            reasons.append(
                f"primary metric {candidate_metric:.4f} on the {split} split is "
                f"{'below' if higher_is_better else 'above'} register_model.metric_floor={floor}"
            )
    if not epsilon <= epsilon_budget:
        reasons.append(f"epsilon {epsilon:.3f} exceeds privacy budget {epsilon_budget}")
    if not validation_passed:
        reasons.append("data validation did not pass")
    if require_dp and not trained_with_dp:
        reasons.append(
            "the candidate was trained without differential privacy and "
            "register_model.require_dp is true (set it to false to promote a non-DP model)"
        )
    notes = _champion_notes(champion, data_version, split, candidate_metric, better, reasons)
    return GateDecision(
        promote=not reasons,
        reasons=reasons,
        checks={
            "split": split,
            "utility_ratio": ratio,
            # the ratio to the worst and best centralized seed, and how many seeds
            "utility_ratio_range": ratio_range(
                candidate_metric, central_scores, higher_is_better=higher_is_better
            ),
            "central_seeds": len(central_scores) or 1,
            "epsilon": epsilon,
            "validation_passed": validation_passed,
            "candidate_metric": math.nan if candidate_metric is None else candidate_metric,
            "trained_with_dp": trained_with_dp,
        },
        notes=notes,
    )


def _champion_notes(
    champion: Champion | None,
    data_version: str | None,
    split: str,
    metric: float | None,
    better: Any,
    reasons: list[str],
) -> list[str]:
    """Refuse (in ``reasons``) to demote a better champion; note what could not be compared."""
    if champion is None or metric is None or math.isnan(metric):
        return []
    if champion.metric is None or champion.data_version is None:
        return [f"current champion v{champion.version} has no recorded metric: not compared"]
    if champion.data_version != data_version:
        return [
            f"current champion v{champion.version} was scored on data version "
            f"{champion.data_version}, this candidate on {data_version}: not compared (different "
            "test data)"
        ]
    if champion.split != split:
        return [
            f"current champion v{champion.version} was scored on the {champion.split} split, "
            f"this candidate on the {split} split: not compared"
        ]
    if better(champion.metric, metric):
        reasons.append(
            f"current champion v{champion.version} scored {champion.metric:.4f} on the same data "
            f"version and {split} split; this candidate's {metric:.4f} would demote it"
        )
    return []


def current_champion(client: Any, model_name: str) -> Champion | None:
    """The version holding alias ``champion`` and the metric, data version and split its gate
    tagged (no ``gate.split`` tag: registered before the gate read val, so it read test)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException as err:
        # no such name yet, or no version holds the alias: anything else is a real failure
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    metric = version.tags.get("gate.candidate_metric")
    return Champion(
        version=str(version.version),
        metric=float(metric) if metric not in (None, "nan") else None,
        data_version=version.tags.get("data_version"),
        split=version.tags.get("gate.split", "test"),
    )


def data_version(dvc_lock: Path) -> str:
    """Hash of the DVC-tracked data outputs recorded in ``dvc.lock`` ('unversioned' without it)."""
    if not dvc_lock.is_file():
        return "unversioned"
    lock = yaml.safe_load(dvc_lock.read_text()) or {}
    outs = {}
    for stage in ("generate_data", "partition_data"):
        for out in (lock.get("stages", {}).get(stage, {}) or {}).get("outs", []):
            outs[out["path"]] = out.get("md5")
    if not outs:
        return "unversioned"
    return hashlib.sha256(json.dumps(outs, sort_keys=True).encode()).hexdigest()[:16]


def experiment_id(client: Any, uri: str, name: str, artifact_location: str, root: Path) -> str:
    """The MLflow experiment ``name``, created on first use.

    With the default SQLite store, artifacts go to ``artifact_location`` under the project root
    (``register_model.artifact_location``); a tracking server decides for itself.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return str(experiment.experiment_id)
    location = (root / artifact_location).resolve().as_uri() if uri.startswith("sqlite:") else None
    return str(
        client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}
        )
    )


#: MLflow 3's experiment type: without it the UI may open an experiment on its GenAI pages
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


def metric_chart_route(run_id: str, experiment: str, keys: list[str]) -> str:
    """The MLflow UI's page charting ``keys`` of one run over steps (a route after ``/#``).

    The query is what the UI's own "metric page" links carry; step = federated round.
    """
    compact = {"separators": (",", ":")}
    query = [
        ("runs", json.dumps([run_id], **compact)),
        ("metric", json.dumps(keys[0])),
        ("experiments", json.dumps([experiment], **compact)),
        ("plot_metric_keys", json.dumps(keys, **compact)),
        ("plot_layout", "{}"),
        ("x_axis", "step"),
        ("y_axis_scale", "linear"),
        ("line_smoothness", "1"),
        ("show_point", "true"),
        ("deselected_curves", "[]"),
        ("last_linear_y_axis_range", "[]"),
    ]
    return "/metric/?" + urlencode(query, quote_via=quote)


#: Registered-model tag naming the task whose models a name holds.
TASK_TAG = "task"


def registered_task(client: Any, model_name: str) -> str | None:
    """The task whose models ``model_name`` holds: its tag, else its newest version's run tag.

    None when the name is not registered yet (or holds no version with a task tag).
    """
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if TASK_TAG in registered.tags:
        return str(registered.tags[TASK_TAG])
    versions = client.search_model_versions(f"name = '{model_name}'")
    newest = max(versions, key=lambda v: int(v.version), default=None)
    if newest is None or not newest.run_id:
        return None
    return client.get_run(newest.run_id).data.tags.get(TASK_TAG)


def check_model_task(client: Any, model_name: str, task: str) -> None:
    """Refuse to register a ``task`` model under a name that holds another task's models.

    Switching ``base.task`` but keeping the model name would make, say, a notes model the new
    version (and champion) of the readmission model that serving loads.
    """
    held = registered_task(client, model_name)
    if held is not None and held != task:
        raise ValueError(
            f"register_model.model_name={model_name!r} holds {held!r} models; a {task!r} model "
            f"needs its own name (set register_model.model_name, e.g. 'privfed-{task}')"
        )


#: Run tag of a registration in progress: ``pending`` until every alias and tag is written.
REGISTRATION_TAG = "registration"


def recover_interrupted(client: Any, experiment_id: str, model_name: str) -> list[str]:
    """Close what a killed ``register_model`` left: its run and any version it created.

    A registration tags its MLflow run ``registration=pending`` first and ``complete`` last.
    A run still pending belongs to a registration that died (``kill -9`` after "Created
    version N"): the run is ended as FAILED if it still shows RUNNING, and every version it
    created is tagged ``registration=failed`` with a ``promotion_reason`` saying so, so it
    can never be taken for a gated model. Returns what was closed, for the log.
    """
    closed = []
    pending = client.search_runs(
        [experiment_id], filter_string=f"tags.{REGISTRATION_TAG} = 'pending'"
    )
    for run in pending:
        run_id = run.info.run_id
        if _still_registering(run.data.tags, run.info.start_time):
            continue  # a registration in progress, not a dead one
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status="FAILED")
        client.set_tag(run_id, REGISTRATION_TAG, "failed")
        closed.append(f"run {run_id}")
        for version in client.search_model_versions(f"name = '{model_name}'"):
            if version.run_id != run_id:
                continue
            client.set_model_version_tag(model_name, version.version, REGISTRATION_TAG, "failed")
            client.set_model_version_tag(
                model_name,
                version.version,
                "promotion_reason",
                "registration was interrupted before the gate's decision was recorded; "
                "not promoted",
            )
            closed.append(f"{model_name} v{version.version}")
    return closed


#: A pending registration from another machine is taken for dead after this long.
STALE_AFTER_S = 3600.0


def registration_owner() -> dict[str, str]:
    """Tags naming the process that registers (so another one can tell whether it is alive)."""
    return {
        f"{REGISTRATION_TAG}.host": socket.gethostname(),
        f"{REGISTRATION_TAG}.pid": str(os.getpid()),
    }


def _still_registering(tags: dict[str, str], start_ms: int | None) -> bool:
    """Whether the registration that tagged a run pending may still be running.

    On this machine its process must be alive; elsewhere it gets :data:`STALE_AFTER_S`.
    """
    import psutil

    host, pid = tags.get(f"{REGISTRATION_TAG}.host"), tags.get(f"{REGISTRATION_TAG}.pid")
    if host == socket.gethostname() and pid and pid.isdigit():
        return psutil.pid_exists(int(pid)) and int(pid) != os.getpid()
    age_s = time.time() - (start_ms or 0) / 1000.0
    return host is not None and age_s < STALE_AFTER_S


def tree_version(root: Path) -> str:
    """Content hash of a data folder (relative paths and bytes) where no dvc.lock records one.

    Kubeflow runs have no dvc.lock: the validated dataset artifact is hashed instead, so a model
    card still names the exact data it was trained on.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    if not files:
        return "unversioned"
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the checkout; in an image without ``.git``, ``PRIVFED_GIT_COMMIT`` set at build."""
    if os.environ.get("PRIVFED_GIT_COMMIT"):
        return os.environ["PRIVFED_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        log.warning("git commit unknown (%s)", err)
        return "unknown"
    return out.stdout.strip()


def tracking_uri(configured: str, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative sqlite path is anchored at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str((root / uri[len(prefix) :]).resolve())
    return uri
