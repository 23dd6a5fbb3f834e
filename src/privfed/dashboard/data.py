"""What the dashboard shows, read from the MLflow tracking store alone.

Pure functions over an ``mlflow.MlflowClient``: runs, metric histories, artifacts and the
registry become plain dicts and pandas frames, so they are tested without Streamlit and the page
(:mod:`privfed.dashboard.app`) only draws. Nothing here reads a hospital's data: the dashboard
sees what the pipeline chose to log (docs/tracking.md), which never holds patient records.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "GLOBAL",
    "PIPELINE_KIND",
    "RoundProgress",
    "comparison",
    "curves",
    "epsilon_curves",
    "experiment_id",
    "federations",
    "figures",
    "hospitals",
    "markdown_reports",
    "membership_audit",
    "participation",
    "pipeline_runs",
    "primary_metric",
    "registry_versions",
    "round_costs",
    "round_progress",
    "run_epsilon",
    "val_metrics",
]

#: Tag value marking a pipeline run (docs/tracking.md).
PIPELINE_KIND = "pipeline"
#: The ``hospital`` of series that are not one hospital's (the weighted mean, the max, ...).
GLOBAL = "global"
#: The federations a pipeline trains, in the order they run; others follow sorted.
KNOWN_FEDERATIONS = ("federated", "federated_dp")
#: Each task's primary metric, to pick it among a federation's validation scores: the store
#: does not name it, and importing the task registry would pull torch into the page.
KNOWN_PRIMARY = (
    "macro_auroc",
    "r2",
    "perplexity",
    "entity_f1_strict",
    "dice_mean",
    "fid",
)
#: Per-hospital metric fields besides ``val_<metric>`` (``<name>.<hospital>.<field>``).
HOSPITAL_FIELDS = (
    "train_loss",
    "num_examples",
    "took_part",
    "bytes_sent",
    "bytes_received",
    "epsilon",
)
#: Where evaluate_models' comparison lands; older registrations logged the folder as ``reports/``.
COMPARISON_PATHS = ("reports/evaluation/comparison.json", "reports/comparison.json")
#: The evaluation report's folder (``reports/`` itself in those older runs). Not all of
#: ``reports/``: the validation report's Data Docs hold Great Expectations' own logos.
REPORT_DIRS = ("reports/evaluation", "reports")


@dataclass(frozen=True)
class RoundProgress:
    """How far a federation got: ``done`` rounds of ``total`` (None: the run has no param)."""

    name: str
    done: int
    total: int | None
    running: bool

    @property
    def label(self) -> str:
        return f"{self.done} / {self.total if self.total is not None else '?'}"


def store_has_experiment(uri: str, experiment: str) -> bool:
    """Whether a SQLite store holds ``experiment`` yet, read without creating the store.

    An MLflow client creates (and migrates) a SQLite store that does not exist yet; the
    dashboard must not, or it races the first stage of ``make run`` creating the same tables
    ("table … already exists"). The experiment appears once the store is whole. Any other
    store (a tracking server) creates nothing on the client's side: True.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return True
    path = Path(uri[len(prefix) :])
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT 1 FROM experiments WHERE name = ?", (experiment,))
            return found.fetchone() is not None
    except sqlite3.OperationalError:  # no experiments table: the store is being created
        return False


def experiment_id(client: Any, name: str) -> str | None:
    """The id of experiment ``name``; None when the store has none by that name (yet)."""
    experiment = client.get_experiment_by_name(name)
    return None if experiment is None else str(experiment.experiment_id)


def _float(value: Any) -> float | None:
    """A number from a metric or JSON value ('inf' and 'nan' strings included); None if none."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def run_epsilon(metrics: Mapping[str, float]) -> float | None:
    """ε the run spent: the DP federation's running figure, else the accountant's max over
    hospitals that ``register_model`` logs; None for a run without DP figures."""
    if "federated_dp.epsilon" in metrics:
        return float(metrics["federated_dp.epsilon"])
    per_hospital = [float(v) for k, v in metrics.items() if k.startswith("privacy.epsilon.")]
    return max(per_hospital) if per_hospital else None


def pipeline_runs(client: Any, experiment: str, *, max_results: int = 200) -> pd.DataFrame:
    """One row per pipeline run of ``experiment`` (newest first): what the run list shows.

    Raises:
        ValueError: no experiment of that name in the store.
    """
    exp_id = experiment_id(client, experiment)
    if exp_id is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in this tracking store")
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.`privfed.kind` = '{PIPELINE_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
    rows = []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "task": tags.get("task") or params.get("base.task"),
                "strategy": tags.get("privfed.strategy") or params.get("train_federated.strategy"),
                "dp": tags.get("privfed.dp") == "true",
                "epsilon": run_epsilon(metrics),
                "status": run.info.status,
                "gate": tags.get("privfed.gate") or "",
                "model_version": tags.get("privfed.model_version") or "",
                "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            }
        )
    columns = [
        "run_id",
        "run_name",
        "task",
        "strategy",
        "dp",
        "epsilon",
        "status",
        "gate",
        "model_version",
        "start_time",
    ]
    return pd.DataFrame(rows, columns=columns)


def federations(run: Any) -> list[str]:
    """The federations a run logged rounds of, or announced by a ``privfed.federation.*`` tag."""
    # a federation's own ``<name>.round``, not a stage's flattened ``<stage>.<...>.round``
    names = {k[: -len(".round")] for k in run.data.metrics if k.endswith(".round")}
    names = {n for n in names if "." not in n}
    prefix = "privfed.federation."
    names |= {k[len(prefix) :] for k in run.data.tags if k.startswith(prefix)}
    known = [n for n in KNOWN_FEDERATIONS if n in names]
    return known + sorted(names - set(known))


def _hospital_keys(keys: Iterable[str], name: str) -> dict[str, set[str]]:
    """``{hospital: {field}}`` of a federation's per-hospital keys ``<name>.<hospital>.<field>``."""
    found: dict[str, set[str]] = {}
    prefix = f"{name}."
    for key in keys:
        if not key.startswith(prefix) or "." not in key[len(prefix) :]:
            continue
        hospital, field = key[len(prefix) :].rsplit(".", 1)
        if field in HOSPITAL_FIELDS or field.startswith("val_"):
            found.setdefault(hospital, set()).add(field)
    return found


def hospitals(keys: Iterable[str], name: str) -> list[str]:
    """The hospitals with figures in federation ``name`` (sorted)."""
    return sorted(_hospital_keys(keys, name))


def val_metrics(keys: Iterable[str], name: str) -> list[str]:
    """The validation metrics hospitals report in federation ``name`` (``val_<metric>``)."""
    fields = set().union(*_hospital_keys(keys, name).values()) if keys else set()
    return sorted(f[len("val_") :] for f in fields if f.startswith("val_"))


def loss_parts(keys: Iterable[str], name: str) -> list[str]:
    """Named parts of federation ``name``'s training loss (a GAN's ``generator_loss`` and
    ``discriminator_loss``): round-level ``<name>.<part>_loss`` keys other than the train
    loss and the validation metrics."""
    keys = list(keys)
    prefix = f"{name}."
    vals = set(val_metrics(keys, name))
    return sorted(
        part
        for k in keys
        if k.startswith(prefix)
        and "." not in (part := k[len(prefix) :])
        and part.endswith("_loss")
        and part != "train_loss"
        and part not in vals
    )


def primary_metric(metrics: list[str]) -> str | None:
    """The task's primary metric among ``metrics``: a known one, else the first that is not
    a loss (a loss is already drawn as the training curve), else None."""
    for known in KNOWN_PRIMARY:
        if known in metrics:
            return known
    others = [m for m in metrics if m != "loss"]
    return (others or metrics or [None])[0]


def round_progress(run: Any, name: str) -> RoundProgress:
    """Round ``done`` of ``train_federated.rounds`` for federation ``name``."""
    done = run.data.metrics.get(f"{name}.round")
    total = run.data.params.get("train_federated.rounds")
    state = run.data.tags.get(f"privfed.federation.{name}")
    running = run.info.status == "RUNNING" and state != "done"
    return RoundProgress(
        name=name,
        done=int(done) if done is not None else 0,
        total=int(total) if total not in (None, "") else None,
        running=running,
    )


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a metric, by step; the last value logged at a step wins."""
    by_step: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, key):
        if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
            by_step[m.step] = (m.timestamp, float(m.value))
    return [(step, value) for step, (_, value) in sorted(by_step.items())]


def _series(
    client: Any, run_id: str, keys: Mapping[str, tuple[str, str]], columns: tuple[str, str]
) -> pd.DataFrame:
    """Long frame ``round, <columns[0]>, <columns[1]>, value`` from metric ``keys``."""
    rows = [
        {"round": step, columns[0]: a, columns[1]: b, "value": value}
        for key, (a, b) in keys.items()
        for step, value in _history(client, run_id, key)
    ]
    return pd.DataFrame(rows, columns=["round", *columns, "value"])


def curves(client: Any, run: Any, name: str, metric: str | None) -> pd.DataFrame:
    """Per-round training loss and validation ``metric``, per hospital and ``global``.

    Columns ``round, hospital, series, value``; ``series`` is ``train_loss``, ``val_<metric>``
    or one of :func:`loss_parts` (a GAN's ``generator_loss``, ``discriminator_loss``).
    """
    parts = loss_parts(run.data.metrics, name)
    keys: dict[str, tuple[str, str]] = {f"{name}.train_loss": (GLOBAL, "train_loss")}
    keys |= {f"{name}.{part}": (GLOBAL, part) for part in parts}
    if metric:
        keys[f"{name}.{metric}"] = (GLOBAL, f"val_{metric}")
    for hospital in hospitals(run.data.metrics, name):
        keys[f"{name}.{hospital}.train_loss"] = (hospital, "train_loss")
        keys |= {f"{name}.{hospital}.{part}": (hospital, part) for part in parts}
        if metric:
            keys[f"{name}.{hospital}.val_{metric}"] = (hospital, f"val_{metric}")
    keys = {k: v for k, v in keys.items() if k in run.data.metrics}
    return _series(client, run.info.run_id, keys, ("hospital", "series"))


def epsilon_curves(client: Any, run: Any, name: str) -> tuple[pd.DataFrame, float | None]:
    """ε spent so far per hospital (and the max, ``global``) by round, and the budget.

    Returns ``(frame with round, hospital, epsilon; privacy.epsilon_budget or None)``.
    """
    keys = {f"{name}.epsilon": (GLOBAL, "epsilon")}
    keys |= {f"{name}.{h}.epsilon": (h, "epsilon") for h in hospitals(run.data.metrics, name)}
    keys = {k: v for k, v in keys.items() if k in run.data.metrics}
    frame = _series(client, run.info.run_id, keys, ("hospital", "series"))
    frame = frame.drop(columns="series").rename(columns={"value": "epsilon"})
    return frame, _float(run.data.params.get("privacy.epsilon_budget"))


def participation(client: Any, run: Any, name: str) -> pd.DataFrame:
    """Who took part in each round: ``round, hospital, took_part`` (bool).

    A hospital that dropped out or whose update was rejected has ``took_part`` False.
    """
    keys = {f"{name}.{h}.took_part": (h, "took_part") for h in hospitals(run.data.metrics, name)}
    keys = {k: v for k, v in keys.items() if k in run.data.metrics}
    frame = _series(client, run.info.run_id, keys, ("hospital", "series"))
    frame["took_part"] = frame.pop("value").astype(float) > 0.5
    return frame.drop(columns="series")


def round_costs(client: Any, run: Any, name: str) -> pd.DataFrame:
    """Per round: wall seconds and bytes sent and received, summed over hospitals.

    Columns ``round, seconds, bytes_sent, bytes_received`` (NaN where not logged).
    """
    rid = run.info.run_id
    table: dict[int, dict[str, float]] = {}
    if f"{name}.seconds" in run.data.metrics:
        for step, value in _history(client, rid, f"{name}.seconds"):
            table.setdefault(step, {})["seconds"] = value
    for h in hospitals(run.data.metrics, name):
        for field in ("bytes_sent", "bytes_received"):
            if f"{name}.{h}.{field}" not in run.data.metrics:
                continue
            for step, value in _history(client, rid, f"{name}.{h}.{field}"):
                row = table.setdefault(step, {})
                row[field] = row.get(field, 0.0) + value
    columns = ["round", "seconds", "bytes_sent", "bytes_received"]
    frame = pd.DataFrame([{"round": s, **v} for s, v in sorted(table.items())], columns=columns)
    return frame


def _download(client: Any, run_id: str, path: str) -> bytes | None:
    """An artifact's bytes; None when the run has no such file."""
    parent = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {f.path for f in client.list_artifacts(run_id, parent) if not f.is_dir}:
        return None
    with tempfile.TemporaryDirectory(prefix="privfed-dashboard-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def _walk(client: Any, run_id: str, path: str) -> list[str]:
    """Every artifact file under ``path`` (recursive)."""
    files = []
    for info in client.list_artifacts(run_id, path):
        files += _walk(client, run_id, info.path) if info.is_dir else [info.path]
    return files


def _comparison_json(client: Any, run_id: str) -> dict[str, Any] | None:
    for path in COMPARISON_PATHS:
        raw = _download(client, run_id, path)
        if raw is not None:
            try:
                return json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"artifact {path} of run {run_id} is not JSON: {err}") from None
    return None


def comparison(client: Any, run_id: str) -> tuple[pd.DataFrame, list[str]]:
    """evaluate_models' comparison (``comparison.json``): one row per model, pooled test
    metrics, mean over hospitals and ε (inf: no DP bound).

    Returns ``(frame indexed by model, the pooled metric columns)``; an empty frame when the
    run has no comparison yet.
    """
    results = _comparison_json(client, run_id) or {}
    rows, metrics = [], []
    for model, res in results.items():
        pooled = res.get("pooled", {})
        metrics += [m for m in pooled if m not in metrics and m != "n"]
        rows.append(
            {
                "model": model,
                **{m: _float(v) for m, v in pooled.items() if m != "n"},
                "mean_per_hospital": _float(res.get("mean_per_hospital")),
                "epsilon": _float(res.get("epsilon")),
            }
        )
    if not rows:
        return pd.DataFrame(columns=["mean_per_hospital", "epsilon"]), []
    frame = pd.DataFrame(rows).set_index("model")
    return frame[[*metrics, "mean_per_hospital", "epsilon"]], metrics


def membership_audit(client: Any, run: Any) -> pd.DataFrame:
    """The membership-inference audit per model: ``model, attack, metric, value``.

    From ``audit.<model>.<attack>_<metric>`` metrics where ``register_model`` logged them, else
    from ``comparison.json``'s ``membership_audit`` entries.
    """
    rows = []
    for key, value in run.data.metrics.items():
        if key.startswith("audit."):
            model, figure = key[len("audit.") :].rsplit(".", 1)
            rows.append({"model": model, "figure": figure, "value": float(value)})
    if not rows:
        for model, res in (_comparison_json(client, run.info.run_id) or {}).items():
            for attack, figures in (res.get("membership_audit") or {}).items():
                if not isinstance(figures, Mapping):
                    continue  # e.g. the counts of members and non-members
                for key, value in figures.items():
                    number = _float(value)
                    if number is not None:
                        rows.append({"model": model, "figure": f"{attack}_{key}", "value": number})
    return pd.DataFrame(rows, columns=["model", "figure", "value"])


def _report_files(client: Any, run_id: str) -> list[str]:
    """Every file of the evaluation report (``reports/evaluation/``, else ``reports/``'s own
    files and ``reports/figures/`` of older runs)."""
    files = _walk(client, run_id, REPORT_DIRS[0])
    if files:
        return files
    top = [f.path for f in client.list_artifacts(run_id, REPORT_DIRS[1]) if not f.is_dir]
    return top + _walk(client, run_id, f"{REPORT_DIRS[1]}/figures")


def figures(client: Any, run_id: str) -> list[tuple[str, bytes]]:
    """The task's PNG figures: under ``plots/`` and in the evaluation report (e.g. a
    segmentation model's overlays, a GAN's samples)."""
    paths = _walk(client, run_id, "plots") + _report_files(client, run_id)
    pngs = sorted({p for p in paths if p.lower().endswith(".png")})
    return [(p, _download(client, run_id, p) or b"") for p in pngs]


def markdown_reports(client: Any, run_id: str) -> list[tuple[str, str]]:
    """Markdown reports of the evaluation (``comparison.md``, ...): ``(path, text)``."""
    paths = sorted(p for p in _report_files(client, run_id) if p.endswith(".md"))
    return [(p, (_download(client, run_id, p) or b"").decode()) for p in paths]


def registry_versions(client: Any, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Registered model versions logged by ``run_ids``, newest first, with their aliases, the
    gate's reasons (``promotion_reason``, ``gate.*`` tags) and the model card (description)."""
    wanted = sorted(set(run_ids))
    if not wanted:
        return []
    out = []
    aliases: dict[str, dict[str, list[str]]] = {}
    quoted = ", ".join(f"'{r}'" for r in wanted)
    for version in client.search_model_versions(f"run_id IN ({quoted})"):
        if version.name not in aliases:
            model = client.get_registered_model(version.name)
            by_version: dict[str, list[str]] = {}
            for alias, v in (model.aliases or {}).items():
                by_version.setdefault(str(v), []).append(alias)
            aliases[version.name] = by_version
        tags = dict(version.tags or {})
        out.append(
            {
                "name": version.name,
                "version": str(version.version),
                "run_id": version.run_id,
                "aliases": sorted(aliases[version.name].get(str(version.version), [])),
                "promotion_reason": tags.get("promotion_reason", ""),
                "gate": {
                    k[len("gate.") :]: v for k, v in sorted(tags.items()) if k.startswith("gate.")
                },
                "created": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
                "model_card": version.description or "",
            }
        )
    out.sort(key=lambda v: (v["name"], -int(v["version"]) if v["version"].isdigit() else 0))
    return out
