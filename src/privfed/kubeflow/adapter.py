"""What a KFP component does around a stage's ``run()``: the whole config, artifact glue.

Components import this inside their function bodies, so it runs in the project image (or, under
``kfp.local.SubprocessRunner(use_venv=False)``, in this environment). Nothing here knows the
task: it maps artifacts to the stage's named inputs and outputs (its ``SPEC``), as the CLI does
for DVC.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from privfed.config import ConfigError, PrivFedConfig, config_from_dict
from privfed.logs import setup_logging
from privfed.tracking import flat_scalars, open_pipeline_run

__all__ = [
    "check_params",
    "stage_config",
    "run_stage",
    "log_scalars",
    "log_confusion",
    "copy_tree",
    "plots_html",
    "validation_html",
    "record_pipeline_status",
    "override_config",
    "override_section",
]

log = logging.getLogger("privfed")


class MetricsArtifact(Protocol):
    """The part of ``kfp.dsl.Metrics`` we use (kept structural so tests need no KFP runtime)."""

    def log_metric(self, metric: str, value: float) -> None: ...


class PathArtifact(Protocol):
    """A KFP artifact as a stage sees it: a local path."""

    @property
    def path(self) -> str: ...


def stage_config(config: Mapping[str, Any]) -> PrivFedConfig:
    """Validate the whole config a component received: every params section, as in params.yaml.

    Validation checks across sections (e.g. SCAFFOLD needs ``privacy.enabled: false`` and then
    ``register_model.candidate: federated``), so a component never validates a part of it: a
    section left at its schema default could contradict one the user set.
    """
    return config_from_dict({k: dict(v or {}) for k, v in config.items()})


def with_tracking(
    sections: Mapping[str, Any], *, tracking_uri: str = "", pipeline_job: str = ""
) -> dict[str, Any]:
    """The sections, with the MLflow server the pipeline names and its job as the key of the
    pipeline run every component logs into (docs/tracking.md).

    Without a job (the sweep: its runs are compared in its own table) no stage logs live.
    """
    config = {k: dict(v or {}) for k, v in sections.items()}
    register = config.setdefault("register_model", {})
    if tracking_uri:
        register["tracking_uri"] = tracking_uri
    if pipeline_job:
        register["pipeline_run"] = f"kfp:{pipeline_job}"
    else:
        register["live"] = False
    return config


def check_params(
    sections: Mapping[str, Any], *, tracking_uri: str = "", pipeline_job: str = ""
) -> dict[str, Any]:
    """The ``check-params`` task: validate every section once, before any stage runs.

    Returns the sections (the config every stage component then takes) with the tracking
    settings of :func:`with_tracking`; a bad value in a Kubeflow UI run fails here, naming the
    key, before any data is generated. The pipeline's MLflow run is opened here, before the
    stages fan out, so parallel components find one run rather than each making its own.
    """
    setup_logging()
    config = with_tracking(sections, tracking_uri=tracking_uri, pipeline_job=pipeline_job)
    cfg = stage_config(config)
    log.info("params valid: task %s, profile %s", cfg.base.task, cfg.base.profile)
    if cfg.register_model.live:
        open_pipeline_run(cfg)
    return config


def run_stage(
    stage: str, config: Mapping[str, Any], **artifacts: PathArtifact | str | Path
) -> dict[str, Any]:
    """Run ``privfed.stages.<stage>.run`` on artifact paths, with the CLI's logging.

    ``artifacts`` are the stage's inputs and outputs by the names its ``SPEC`` declares (an
    alternative input in place of the one it stands for); a missing or unknown name is an error
    here rather than a KeyError deep inside the stage.
    """
    from privfed.stages import run_tracked, stage_spec

    spec = stage_spec(stage)
    replaced = {spec.alternative_inputs[n] for n in artifacts if n in spec.alternative_inputs}
    expected = (set(spec.inputs) - replaced) | set(spec.alternative_inputs) | set(spec.outputs)
    missing = (set(spec.inputs) - replaced) | set(spec.outputs)
    unknown, missing = set(artifacts) - expected, missing - set(artifacts)
    if unknown or missing:
        raise TypeError(
            f"stage {stage}: artifacts {sorted(artifacts)} do not match its SPEC "
            f"(unknown: {sorted(unknown)}, missing: {sorted(missing)})"
        )
    paths = {n: Path(getattr(a, "path", a)) for n, a in artifacts.items()}
    setup_logging()
    cfg = stage_config(config)
    log.info("kubeflow component %s (task %s, profile %s)", stage, cfg.base.task, cfg.base.profile)
    outputs = {n: p for n, p in paths.items() if n in spec.outputs}
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    inputs = {n: p for n, p in paths.items() if n not in outputs}
    return run_tracked(stage, cfg, inputs, outputs)


def log_scalars(artifact: MetricsArtifact, data: Mapping[str, Any], *, prefix: str = "") -> int:
    """Log every finite number in a (nested) stage metrics dict; the Kubeflow UI lists them.

    Lists (per-round rows) are skipped: they are in the artifact's JSON file and in MLflow.
    Returns how many scalars were logged.
    """
    count = 0
    for key, value in flat_scalars(data, prefix):
        artifact.log_metric(key, value)
        count += 1
    return count


def log_confusion(artifact: Any, report_dir: Path, model: str) -> bool:
    """The pooled-test confusion matrix of ``model`` as a KFP ClassificationMetrics artifact.

    Returns False (nothing logged) for tasks without one, e.g. generation or segmentation.
    """
    from privfed.stages.evaluate_models import CONFUSION_FILE

    path = Path(report_dir) / CONFUSION_FILE
    entry = json.loads(path.read_text()).get(model) if path.is_file() else None
    if not entry:
        return False
    artifact.log_confusion_matrix(entry["labels"], entry["matrix"])
    return True


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy a folder artifact (KFP gives each output its own path; the folder may pre-exist)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;"
        "padding:.2em .5em}table{border-collapse:collapse}.bad{color:#b00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def plots_html(plots_dir: str | Path, out: str | Path, *, title: str = "PrivFed plots") -> None:
    """One self-contained page with every PNG inlined: the UI's HTML viewer cannot follow links."""
    parts = []
    for png in sorted(Path(plots_dir).glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(png.stem)}</h2><img alt='{html.escape(png.stem)}' "
            f"src='data:image/png;base64,{data}'/>"
        )
    Path(out).write_text(_page(title, "".join(parts) or "<p>no plots</p>"))


def validation_html(report_dir: str | Path, out: str | Path) -> None:
    """The stage's self-contained ``report.html`` as the step's HTML output (KFP UI shows it)."""
    from privfed.stages.validate_data import HTML_FILE

    shutil.copyfile(Path(report_dir) / HTML_FILE, out)


def record_pipeline_status(
    *,
    state: str,
    job: str,
    error: str,
    sections: Mapping[str, Any],
    tracking_uri: str,
    pipeline_job: str = "",
) -> str | None:
    """Exit-handler body: a pipeline that did not succeed leaves its MLflow run FAILED.

    The run is the pipeline run the stages logged into (the key ``pipeline_job``), or a new
    one where none was opened (a run that failed at check-params). A successful pipeline's run
    was finished by ``register_model``; nothing is added then. Returns the MLflow run id of the
    recorded failure, or None.
    """
    setup_logging()
    if state == "SUCCEEDED":
        log.info("pipeline %s succeeded; nothing to record", job)
        return None
    config = with_tracking(sections, tracking_uri=tracking_uri, pipeline_job=pipeline_job)
    try:
        cfg = stage_config(config)
    except ConfigError as err:
        # The run may have failed on this very config: record it under the sections this
        # step needs (the MLflow settings), whose defaults cannot contradict each other.
        log.warning("params invalid (%s); recording the failure with register_model alone", err)
        cfg = stage_config({s: config.get(s) for s in ("base", "register_model", "profiles")})
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    run = open_pipeline_run(cfg)  # the run the stages logged into, or one for this failure
    run.set_tags({"pipeline_status": state, "kfp.pipeline_job": job, "error": error[:4000]})
    run.end("FAILED")
    log.error("pipeline %s ended %s; recorded as MLflow run %s: %s", job, state, run.run_id, error)
    return run.run_id


def _number(value: Any) -> Any:
    """Loop values arrive as floats from KFP; integral ones go back to int (num_hospitals)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def override_section(
    section: Mapping[str, Any],
    profiles: Mapping[str, Any],
    name: str,
    values: Mapping[str, Any],
    unset: list[str] | tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set ``values`` in params section ``name`` so that they hold whatever the profile.

    Profile overlays win over section keys (see params.yaml), so a sweep value must also be
    taken out of every overlay that names the same key, or the tiny profile would silently put
    its own ε back. Keys in ``unset`` go back to their schema defaults (KFP cannot pass null).
    """
    touched = set(values) | set(unset)
    new_section = {k: v for k, v in dict(section or {}).items() if k not in unset}
    new_section |= {k: _number(v) for k, v in values.items()}
    new_profiles: dict[str, Any] = {}
    for profile, overlay in (profiles or {}).items():
        overlay = dict(overlay or {})
        if isinstance(overlay.get(name), Mapping):
            kept = {k: v for k, v in overlay[name].items() if k not in touched}
            overlay[name] = kept
        new_profiles[profile] = overlay
    return new_section, new_profiles


def override_config(
    config: Mapping[str, Any],
    name: str,
    values: Mapping[str, Any],
    unset: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole config with ``values`` set in section ``name`` (see :func:`override_section`)."""
    section, profiles = override_section(
        config.get(name) or {}, config.get("profiles") or {}, name, values, unset
    )
    return {**config, name: section, "profiles": profiles}


def sweep_row(
    variable: str, value: float, evaluation: str | Path, accounting: str | Path, out: str | Path
) -> dict[str, Any]:
    """One sweep point: the swept value, utility of each model, ε actually spent."""
    summary = json.loads(Path(evaluation).read_text())["summary"]
    privacy = json.loads(Path(accounting).read_text())
    row = {
        "variable": variable,
        "value": _number(value),
        "primary_metric": summary["primary_metric"],
        "centralized": summary.get("centralized"),
        "local_mean": summary.get("local_mean"),
        "federated": summary.get("federated"),
        "federated_dp": summary.get("federated_dp"),
        "epsilon_spent": privacy.get("epsilon"),
    }
    Path(out).write_text(json.dumps(row, indent=2))
    return row


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def collect_sweep_points(
    points: list[str], results: str | Path, table: str | Path, plot: str | Path
) -> list[dict[str, Any]]:
    """Markdown tables (one per swept variable), a JSON list and a self-contained HTML plot."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(Path(p).read_text()) for p in points]
    rows.sort(
        key=lambda r: (
            r["variable"],
            -float(r["value"]) if r["variable"] == "epsilon" else float(r["value"]),
        )
    )
    Path(results).write_text(json.dumps(rows, indent=2))
    cols = ["value", "centralized", "local_mean", "federated", "federated_dp", "epsilon_spent"]
    parts, images = [], []
    for variable in sorted({r["variable"] for r in rows}):
        sub = [r for r in rows if r["variable"] == variable]
        metric = sub[0]["primary_metric"]
        parts.append(f"## {variable} sweep (pooled test {metric})\n")
        parts.append("| " + " | ".join([variable, *cols[1:]]) + " |")
        parts.append("|" + "---|" * len(cols))
        parts += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in sub]
        parts.append("")
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [float(r["value"]) for r in sub]
        for model in ("federated_dp", "federated", "centralized"):
            ax.plot(xs, [r.get(model) for r in sub], marker="o", label=model)
        if variable == "epsilon":
            ax.set_xscale("log")
        ax.set_xlabel(variable)
        ax.set_ylabel(f"pooled test {metric}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        images.append(
            f"<h2>{html.escape(variable)}</h2><img alt='{html.escape(variable)} sweep' "
            f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"
        )
    Path(table).write_text("# PrivFed sweep\n\n" + "\n".join(parts))
    Path(plot).write_text(_page("PrivFed sweep", "".join(images)))
    return rows
