"""Compile the pipeline definitions of a PrivFed checkout (``pipelines/``), in the checkout.

The pipeline modules live beside ``components/`` at the project root, not inside the installed
package: the image only needs ``privfed``; the DAG is compiled where the repository is. So this
module never imports them: :func:`compile_pipeline` runs the checkout's own
``python -m pipelines compile`` with the checkout as working directory (Python puts it first on
that process's path), and everything else works on the IR YAML it writes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privfed.config import ConfigError

__all__ = ["CONFIG_ERROR_EXIT", "PIPELINES", "PipelineDef", "compile_pipeline", "write_ir"]

#: Exit status of ``python -m pipelines compile`` for a params error (its message on stdout).
CONFIG_ERROR_EXIT = 3


@dataclass(frozen=True)
class PipelineDef:
    builder: str  # function in pipelines.privfed_pipeline
    package: str  # committed compiled IR, relative to the project root


PIPELINES: dict[str, PipelineDef] = {
    "main": PipelineDef("build_pipeline", "pipelines/privfed_pipeline.yaml"),
    "sweep": PipelineDef("build_sweep_pipeline", "pipelines/privfed_sweep.yaml"),
}


def _checkout(project: Path) -> Path:
    project = Path(project).resolve()
    if not (project / "pipelines" / "privfed_pipeline.py").is_file():
        raise FileNotFoundError(
            f"{project} has no pipelines/privfed_pipeline.py; run from a PrivFed checkout "
            "or pass --project"
        )
    return project


def compile_pipeline(name: str, params: Path, out: Path, project: Path = Path(".")) -> Path:
    """Write the IR YAML users upload in the Kubeflow UI (deterministic: byte-identical reruns).

    Raises:
        ConfigError: the params file is invalid for this pipeline (the message says why).
        RuntimeError: compiling failed otherwise (with the end of its output).
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; pipelines: {', '.join(PIPELINES)}")
    project = _checkout(project)
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "compile",
        "--pipeline",
        name,
        "--params",
        str(Path(params).resolve()),
        "--output",
        str(Path(out).resolve()),
    ]
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    if done.returncode == CONFIG_ERROR_EXIT:
        raise ConfigError(done.stdout.strip())
    if done.returncode:
        raise RuntimeError(
            f"`python -m pipelines compile --pipeline {name}` failed in {project} "
            f"(exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    return Path(out)


def write_ir(pipeline: Any, out: Path) -> Path:
    """Compile a pipeline function to ``out`` (what ``python -m pipelines compile`` calls)."""
    from kfp import compiler

    from privfed.io import atomic_path

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
