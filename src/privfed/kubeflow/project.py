"""Find and compile the pipeline definitions of a PrivFed checkout (``pipelines/``).

The pipeline modules live beside ``components/`` at the project root, not inside the installed
package: the image only needs ``privfed``; the DAG is compiled where the repository is.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PIPELINES", "PipelineDef", "build", "compile_pipeline"]


@dataclass(frozen=True)
class PipelineDef:
    builder: str  # function in pipelines.privfed_pipeline
    package: str  # committed compiled IR, relative to the project root


PIPELINES: dict[str, PipelineDef] = {
    "main": PipelineDef("build_pipeline", "pipelines/privfed_pipeline.yaml"),
    "sweep": PipelineDef("build_sweep_pipeline", "pipelines/privfed_sweep.yaml"),
}


def _module(project: Path) -> Any:
    project = Path(project).resolve()
    if not (project / "pipelines" / "privfed_pipeline.py").is_file():
        raise FileNotFoundError(
            f"{project} has no pipelines/privfed_pipeline.py; run from a PrivFed checkout "
            "or pass --project"
        )
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    return importlib.import_module("pipelines.privfed_pipeline")


def build(name: str, params: Path, project: Path = Path(".")) -> Any:
    """The pipeline function ``name`` (main | sweep) with defaults from ``params``."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; pipelines: {', '.join(PIPELINES)}")
    return getattr(_module(project), PIPELINES[name].builder)(params)


def compile_pipeline(name: str, params: Path, out: Path, project: Path = Path(".")) -> Path:
    """Write the IR YAML users upload in the Kubeflow UI (deterministic: byte-identical reruns)."""
    import tempfile

    from kfp import compiler

    from privfed.io import atomic_path

    pipeline = build(name, params, project)
    with tempfile.TemporaryDirectory() as work:
        compiled = Path(work) / "pipeline.yaml"  # KFP wants a .yaml name
        compiler.Compiler().compile(pipeline, str(compiled))
        with atomic_path(out) as tmp:
            tmp.write_text(sorted_header(compiled.read_text()))
    return Path(out)


def _sorted_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_value(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_value(v) for v in value]
    return value


def sorted_header(text: str) -> str:
    """KFP's header comment with dict defaults in key order.

    KFP prints each input's default from a protobuf map, whose order changes from process to
    process, so two compiles of the same pipeline differed in their comments alone.
    """
    import ast

    lines = []
    for line in text.splitlines():
        head, sep, rest = line.partition(" [Default: ")
        if line.startswith("#    ") and sep and rest.startswith("{"):
            line = f"{head}{sep}{_sorted_value(ast.literal_eval(rest.removesuffix(']')))}]"
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")
