"""``privfed pipeline run-local``: the whole DAG through KFP's own local runner.

``kfp.local.SubprocessRunner(use_venv=False)`` runs every component as a subprocess of this
environment (no containers here). Afterwards the artifacts are copied into the DVC layout
(``data/raw``, ``models/…``, ``metrics/*.json`` …) so a Kubeflow run and a ``dvc repro`` run
produce the same kinds of output in the same places.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from privfed.stages import DEFAULT_PATHS

__all__ = ["ARTIFACT_LAYOUT", "run_local", "materialize"]

log = logging.getLogger("privfed")

#: (KFP task, its output artifact) -> (stage, the stage's output name in DEFAULT_PATHS).
ARTIFACT_LAYOUT: dict[tuple[str, str], tuple[str, str]] = {
    ("generate-data", "generated"): ("generate_data", "generated"),
    ("ingest-data", "raw"): ("ingest_data", "raw"),
    ("validate-data", "validation"): ("validate_data", "report"),
    ("partition-data", "partitions"): ("partition_data", "partitions"),
    ("partition-data", "stats"): ("partition_data", "stats"),
    ("train-centralized", "centralized"): ("train_centralized", "model"),
    ("train-centralized", "metrics"): ("train_centralized", "metrics"),
    ("train-local", "local"): ("train_local", "models"),
    ("train-local", "metrics"): ("train_local", "metrics"),
    ("train-federated", "federated"): ("train_federated", "models"),
    ("train-federated", "metrics"): ("train_federated", "metrics"),
    ("account-privacy", "accounting"): ("account_privacy", "privacy"),
    ("evaluate-models", "evaluation"): ("evaluate_models", "metrics"),
    ("evaluate-models", "evaluation_report"): ("evaluate_models", "report"),
    ("evaluate-models", "plots"): ("evaluate_models", "plots"),
    ("register-model", "registration"): ("register_model", "registration"),
}


def _latest_run(root: Path, pipeline_name: str) -> Path:
    runs = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{pipeline_name}-")),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise FileNotFoundError(f"no run of pipeline {pipeline_name!r} under {root}")
    return runs[-1]


def materialize(run_dir: Path, out: Path) -> dict[str, str]:
    """Copy a local run's artifacts to the DVC layout under ``out``; returns dest -> source."""
    copied: dict[str, str] = {}
    for (task, artifact), (stage, name) in ARTIFACT_LAYOUT.items():
        src = run_dir / task / artifact
        if not src.exists():
            raise FileNotFoundError(f"task {task} left no artifact {artifact!r} in {run_dir}")
        dest = out / DEFAULT_PATHS[stage]["outputs"][name]
        if dest.is_dir():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copyfile(src, dest)
        copied[str(dest)] = str(src)
    return copied


def local_tracking_uri(configured: str) -> str:
    """MLflow for a local run: ``MLFLOW_TRACKING_URI`` or params' store anchored at the cwd."""
    from privfed.registry import tracking_uri

    return tracking_uri(configured, Path.cwd())


def run_local(
    params: Path,
    *,
    root: Path,
    out: Path | None,
    pipeline: str = "main",
    project: Path = Path("."),
    arguments: dict[str, Any] | None = None,
) -> Path:
    """Run the DAG with KFP's local runner; returns the run's artifact folder.

    ``arguments`` override pipeline parameters (whole sections). With ``out``, artifacts of the
    main pipeline are also copied into the DVC layout there.
    """
    from kfp import local

    from privfed.kubeflow.project import build

    func = build(pipeline, params, project)
    from privfed.kubeflow.parameters import load_params

    _, cfg = load_params(params)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # The cluster's MLflow URI is a pipeline default; a local run records where params say.
    args = {"mlflow_tracking_uri": local_tracking_uri(cfg.register_model.tracking_uri)}
    args |= arguments or {}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    log.info("running pipeline %s with the KFP local runner under %s", pipeline, root)
    func(**args)
    run_dir = _latest_run(root, func.name)
    if out is not None and pipeline == "main":
        copied = materialize(run_dir, Path(out))
        log.info("copied %d artifacts into the DVC layout under %s", len(copied), out)
    return run_dir
