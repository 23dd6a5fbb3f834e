"""``privfed pipeline run-local``: the whole DAG through KFP's own local runner.

The pipeline is compiled in the checkout (:func:`privfed.kubeflow.project.compile_pipeline`),
and that IR YAML, the same file a cluster would receive, runs with
``kfp.local.SubprocessRunner(use_venv=False)``: every component as a subprocess of this
environment; or, with ``runner="docker"``, with ``kfp.local.DockerRunner``: every component in
its image (``kubeflow.image`` / ``PRIVFED_IMAGE``) by the command line the IR gives a cluster,
on the host network, the pipeline root mounted at its own path. Afterwards the artifacts are
copied into the DVC layout (``data/raw``, ``models/…``, ``metrics/*.json`` …) so a Kubeflow
run and a ``dvc repro`` run produce the same kinds of output in the same places.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from privfed.config import STAGES

__all__ = ["RUNNERS", "artifact_layout", "local_runner", "run_local", "materialize"]

#: ``run_local``'s runners: KFP's subprocess runner in this environment, or its Docker runner.
RUNNERS = ("subprocess", "docker")

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


def local_runner(kind: str, *, root: Path, out: Path | None, image: str) -> Any:
    """The KFP local runner ``kind`` names, set up for this project.

    The Docker runner mounts only the pipeline root (at its own path) into each container, so
    ``out``, where the run's SQLite MLflow store may be, must lie under it. Containers use the
    host network (no bridge) and this process's user id, which owns the mounted root.

    Raises:
        ValueError: naming an unknown ``kind``, an ``out`` outside ``root``, or an ``image``
            the Docker daemon does not have.
    """
    from kfp import local

    if kind == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    if kind != "docker":
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {kind!r}")
    if out is not None and not Path(out).resolve().is_relative_to(root):
        raise ValueError(
            f"--out {out} is not under --root {root}: with the docker runner the containers "
            "see only the pipeline root"
        )
    import docker

    try:
        docker.from_env().images.get(image)
    except docker.errors.ImageNotFound:
        raise ValueError(
            f"image {image!r} (kubeflow.image / PRIVFED_IMAGE) is not on this Docker daemon: "
            "build it with `make images`"
        ) from None
    return local.DockerRunner(
        network_mode="host", user=f"{os.getuid()}:{os.getgid()}", environment={"HOME": "/tmp"}
    )


def run_local(
    params: Path,
    *,
    root: Path,
    out: Path | None,
    pipeline: str = "main",
    project: Path = Path("."),
    arguments: dict[str, Any] | None = None,
    runner: str = "subprocess",
) -> Path:
    """Run the DAG with KFP's local runner; returns the run's artifact folder.

    ``arguments`` override pipeline parameters (whole sections). With ``out``, artifacts of the
    main pipeline are also copied into the DVC layout there. ``runner`` is one of
    :data:`RUNNERS` (:func:`local_runner`).
    """
    from kfp import components, local

    from privfed.kubeflow.parameters import load_params
    from privfed.kubeflow.project import compile_pipeline
    from privfed.kubeflow.settings import cpu_image

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
    kfp_runner = local_runner(runner, root=root, out=out, image=cpu_image(cfg.kubeflow))
    local.init(runner=kfp_runner, pipeline_root=str(root))
    log.info("running pipeline %s with KFP's local %s runner under %s", pipeline, runner, root)
    func(**args)
    run_dir = _latest_run(root, func.name)
    if out is not None and pipeline == "main":
        copied = materialize(run_dir, Path(out))
        log.info("copied %d artifacts into the DVC layout under %s", len(copied), out)
    return run_dir
