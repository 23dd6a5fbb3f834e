"""Pipeline stages. Each module has ``run(cfg, inputs, outputs) -> dict`` over plain paths.

Beside its ``run()`` each module declares ``SPEC`` (:class:`~privfed.stages.spec.StageSpec`):
the params keys it reads and its named inputs and outputs with their DVC-layout paths. The CLI
(what ``dvc.yaml`` calls), the Kubeflow components and the tests are thin adapters around these
functions and take the names and default paths from those declarations.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from privfed.config import STAGES, PrivFedConfig
from privfed.stages.spec import StageSpec

__all__ = [
    "STAGES",
    "DEFAULT_PATHS",
    "StageSpec",
    "get_stage",
    "run_data_stages",
    "run_tracked",
    "stage_spec",
]

StageFn = Callable[[PrivFedConfig, Mapping[str, Path], Mapping[str, Path]], dict[str, Any]]

#: The stages that turn a task's data into partitions, in order (what run_data_stages runs).
_DATA_CHAIN = ("generate_data", "ingest_data", "validate_data", "partition_data")


def _module(name: str) -> Any:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"privfed.stages.{name}")


def get_stage(name: str) -> StageFn:
    return _module(name).run


def run_tracked(
    name: str, cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    """Run a stage as the CLI and the Kubeflow components do: inside the pipeline's MLflow run,
    which gets its figures and reports when it ends (:mod:`privfed.tracking`)."""
    from privfed.tracking import tracked_stage

    with tracked_stage(name, cfg, stage_spec(name).outputs, outputs) as result:
        result["metrics"] = get_stage(name)(cfg, inputs, outputs)
    return result["metrics"]


def stage_spec(name: str) -> StageSpec:
    """The declaration beside ``privfed.stages.<name>.run`` (imports that stage only)."""
    return _module(name).SPEC


@functools.cache
def _default_paths() -> dict[str, dict[str, dict[str, str]]]:
    return {
        stage: {
            "inputs": dict(stage_spec(stage).inputs),
            "outputs": dict(stage_spec(stage).outputs),
        }
        for stage in STAGES
    }


def __getattr__(name: str) -> Any:
    # DEFAULT_PATHS is built on first use: it imports every stage module, which importing one
    # stage (what `dvc repro` runs, and what dvc.yaml's deps are checked against) must not do.
    if name == "DEFAULT_PATHS":
        return _default_paths()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_data_stages(cfg: PrivFedConfig, work: Path) -> Path:
    """generate → ingest → validate → partition under ``work``; returns the partitions folder.

    The Python front door for notebooks, tests and benchmarks that need a task's partitions.
    Every input and output is ``work / <last part of its DVC path>``.
    """
    for stage in _DATA_CHAIN:
        spec = stage_spec(stage)
        get_stage(stage)(
            cfg,
            {k: work / Path(v).name for k, v in spec.inputs.items()},
            {k: work / Path(v).name for k, v in spec.outputs.items()},
        )
    return work / Path(stage_spec("partition_data").outputs["partitions"]).name
