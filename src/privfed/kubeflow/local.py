"""``privfed pipeline run-local``: the whole DAG through KFP's own local runner.

The pipeline is compiled in the checkout (:func:`privfed.kubeflow.project.compile_pipeline`),
and that IR YAML, the same file a cluster would receive, runs with
``kfp.local.SubprocessRunner(use_venv=False)``: every component as a subprocess of this
environment (no containers here). Afterwards the artifacts are copied into the DVC layout
(``data/raw``, ``models/…``, ``metrics/*.json`` …) so a Kubeflow run and a ``dvc repro`` run
produce the same kinds of output in the same places.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from privfed.config import STAGES

__all__ = ["artifact_layout", "run_local", "materialize"]

log = logging.getLogger("privfed")


def artifact_layout() -> dict[tuple[str, str], str]:
    """(KFP task, its output artifact) -> path in the DVC layout, from the stages' ``SPEC``s.

    A stage's component names its artifacts as the stage names its outputs, and its KFP task
    is the stage name with dashes.
    """
    from privfed.stages import stage_spec

    return {
        (stage.replace("_", "-"), name): path
        for stage in STAGES
        for name, path in stage_spec(stage).outputs.items()
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
    for (task, artifact), rel in artifact_layout().items():
        src = run_dir / task / artifact
        if not src.exists():
            raise FileNotFoundError(f"task {task} left no artifact {artifact!r} in {run_dir}")
        dest = out / rel
        if dest.is_dir():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copyfile(src, dest)
        copied[str(dest)] = str(src)
    return copied


def local_tracking_uri(configured: str, out: Path | None = None) -> str:
    """MLflow for a local run: ``MLFLOW_TRACKING_URI``, else params' store anchored at ``out``.

    A relative SQLite store lands in the run's own output folder (the cwd without one), so a
    local run registers nothing in the store ``dvc repro`` uses.
    """
    from privfed.registry import tracking_uri

    return tracking_uri(configured, Path(out).resolve() if out is not None else Path.cwd())


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
    from kfp import components, local

    from privfed.kubeflow.parameters import load_params
    from privfed.kubeflow.project import compile_pipeline

    _, cfg = load_params(params)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)  # its SQLite store may be created there
    with tempfile.TemporaryDirectory() as work:
        package = compile_pipeline(pipeline, params, Path(work) / f"{pipeline}.yaml", project)
        func = components.load_component_from_file(str(package))
    # The cluster's MLflow URI is a pipeline default; a local run records where params say.
    args = {"mlflow_tracking_uri": local_tracking_uri(cfg.register_model.tracking_uri, out)}
    args |= arguments or {}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    log.info("running pipeline %s with the KFP local runner under %s", pipeline, root)
    func(**args)
    run_dir = _latest_run(root, func.name)
    if out is not None and pipeline == "main":
        copied = materialize(run_dir, Path(out))
        log.info("copied %d artifacts into the DVC layout under %s", len(copied), out)
    return run_dir
