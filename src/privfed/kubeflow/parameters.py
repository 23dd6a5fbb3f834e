"""Pipeline parameters: the params.yaml sections, one dict parameter each.

A Kubeflow UI run can override any of them. ``kubeflow`` and ``cluster`` are compile-time only:
they decide the pods' images, volumes, secrets and labels, which a run cannot change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from privfed.config import ConfigError, PrivFedConfig, config_from_dict, load_config

__all__ = ["COMPILE_TIME_SECTIONS", "PIPELINE_SECTIONS", "load_params"]

#: params.yaml sections that are pipeline parameters.
PIPELINE_SECTIONS = (
    "base",
    "generate_data",
    "ingest_data",
    "validate_data",
    "partition_data",
    "model",
    "train",
    "train_centralized",
    "train_local",
    "train_federated",
    "privacy",
    "account_privacy",
    "evaluate_models",
    "register_model",
    "profiles",
)
#: Sections fixed when the pipeline is compiled (they shape the pods, not the computation).
COMPILE_TIME_SECTIONS = ("cluster", "kubeflow")


def _drop_nulls(value: Any) -> Any:
    """KFP cannot write null into a parameter default; a null key means 'the schema default'."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def load_params(path: str | Path) -> tuple[dict[str, Any], PrivFedConfig]:
    """Every params.yaml section as written (the pipeline defaults) and the validated config.

    Keys set to null are left out; the check below proves that changes nothing. A schema file
    named by ``ingest_data.schema`` is inlined: pods see its contents, not a path on this machine.
    """
    cfg = load_config(path)  # names a missing file or a bad value
    raw = _drop_nulls(yaml.safe_load(Path(path).read_text()) or {})
    if isinstance((raw.get("ingest_data") or {}).get("schema"), str):
        raw["ingest_data"]["schema"] = _drop_nulls(cfg.ingest_data.schema_)
    if config_from_dict(raw).model_dump() != cfg.model_dump():
        raise ConfigError(f"{path}: a null value differs from its schema default")
    return {s: raw.get(s) or {} for s in (*PIPELINE_SECTIONS, *COMPILE_TIME_SECTIONS)}, cfg
