"""Pipeline stages. Each module has ``run(cfg, inputs, outputs) -> dict`` over plain paths.

The CLI (what ``dvc.yaml`` calls) and the tests are thin adapters around these functions and
hold no logic of their own (Kubeflow components are meant to be the third such adapter).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from privfed.config import STAGES, PrivFedConfig

__all__ = ["STAGES", "DEFAULT_PATHS", "get_stage", "run_data_stages"]

StageFn = Callable[[PrivFedConfig, Mapping[str, Path], Mapping[str, Path]], dict[str, Any]]

#: Where each stage reads and writes in the DVC layout (relative to the project root).
DEFAULT_PATHS: dict[str, dict[str, dict[str, str]]] = {
    "generate_data": {"inputs": {}, "outputs": {"generated": "data/generated"}},
    "ingest_data": {"inputs": {"generated": "data/generated"}, "outputs": {"raw": "data/raw"}},
    "validate_data": {
        "inputs": {"raw": "data/raw"},
        "outputs": {"report": "reports/validation"},
    },
    "partition_data": {
        "inputs": {"raw": "data/raw", "validation": "reports/validation"},
        "outputs": {"partitions": "data/partitions", "stats": "metrics/partition_stats.json"},
    },
    "train_centralized": {
        "inputs": {"partitions": "data/partitions"},
        "outputs": {"model": "models/centralized", "metrics": "metrics/train_centralized.json"},
    },
    "train_local": {
        "inputs": {"partitions": "data/partitions"},
        "outputs": {"models": "models/local", "metrics": "metrics/train_local.json"},
    },
    "train_federated": {
        "inputs": {"partitions": "data/partitions"},
        "outputs": {"models": "models/federated", "metrics": "metrics/train_federated.json"},
    },
    "account_privacy": {
        "inputs": {"federated": "models/federated"},
        "outputs": {"privacy": "metrics/privacy.json"},
    },
    "evaluate_models": {
        "inputs": {
            "partitions": "data/partitions",
            "centralized": "models/centralized",
            "local": "models/local",
            "federated": "models/federated",
            "privacy": "metrics/privacy.json",
        },
        "outputs": {
            "metrics": "metrics/evaluation.json",
            "report": "reports/evaluation",
            "plots": "plots",
        },
    },
    "register_model": {
        "inputs": {
            "validation": "reports/validation",
            "centralized": "models/centralized",
            "federated": "models/federated",
            "privacy": "metrics/privacy.json",
            "evaluation": "metrics/evaluation.json",
            "report": "reports/evaluation",
            "plots": "plots",
            "dvc_lock": "dvc.lock",
        },
        "outputs": {"registration": "reports/registration"},
    },
}


def get_stage(name: str) -> StageFn:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"privfed.stages.{name}").run


def run_data_stages(cfg: PrivFedConfig, work: Path) -> Path:
    """generate → ingest → validate → partition under ``work``; returns the partitions folder.

    The Python front door for notebooks, tests and benchmarks that need a task's partitions.
    """
    for stage in ("generate_data", "ingest_data", "validate_data", "partition_data"):
        paths = DEFAULT_PATHS[stage]
        get_stage(stage)(
            cfg,
            {k: work / Path(v).name for k, v in paths["inputs"].items()},
            {k: work / Path(v).name for k, v in paths["outputs"].items()},
        )
    return work / "partitions"
