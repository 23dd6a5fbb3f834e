"""The params.yaml sections every run has, whatever its task.

Tasks add their own keys to :data:`TASK_SECTIONS` through a :class:`TaskSettings` (declared in
the task's folder); :func:`privfed.config.config_model` composes them. Nothing here knows a task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from privfed.config.yamlfile import read_yaml

__all__ = [
    "TASK_SECTIONS",
    "AccountPrivacySection",
    "BaseSection",
    "ConfigError",
    "EvaluateModelsSection",
    "GenerateDataSection",
    "IngestDataSection",
    "ModelSection",
    "PartitionDataSection",
    "PrivacySection",
    "RegisterModelSection",
    "Section",
    "TaskSettings",
    "TrainCentralizedSection",
    "TrainLocalSection",
    "TrainSection",
    "ValidateDataSection",
    "read_schema_file",
]

#: Sections a task may add keys to (its :class:`TaskSettings`).
TASK_SECTIONS = ("generate_data", "ingest_data", "model")


class ConfigError(ValueError):
    """A params.yaml value is missing, of the wrong type or out of range."""


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values never change after loading.

    A boolean where a number belongs is an error too: pydantic would read ``rounds: true`` as
    1 round.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, info in cls.model_fields.items():
            key = info.alias or name
            value = data.get(key, data.get(name))
            if isinstance(value, bool) and _is_number(info.annotation):
                raise ValueError(f"{key}={value!r}: expected a number, not a boolean")
        return data


def _is_number(annotation: Any) -> bool:
    """``int``, ``float`` or either of them or None."""
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return annotation in (int, float) or any(a in (int, float) for a in options)


@dataclass(frozen=True)
class TaskSettings:
    """A task's own keys in the shared sections, declared in the task's folder.

    Args:
        nested: section name -> settings model read at ``<section>.<task name>`` (the usual
            home of a task's keys, e.g. ``model.segmentation``).
        flat: section name -> settings model whose keys sit at the top of the section, beside
            the shared ones (readmission's keys, which predate the registry, and the tabular
            task's ``ingest_data.schema``). Two tasks may not declare the same flat key.
        strategy: the task's ``train_federated.strategy`` where params leave it ``null``: the
            strategy measured best for the task (extraction's adapters need server momentum).
    """

    nested: Mapping[str, type[Section]] = field(default_factory=dict)
    flat: Mapping[str, type[Section]] = field(default_factory=dict)
    strategy: str = "fedavg"

    def __post_init__(self) -> None:
        for name in (*self.nested, *self.flat):
            if name not in TASK_SECTIONS:
                raise ValueError(
                    f"a task may add keys only to {list(TASK_SECTIONS)}, not to {name!r}"
                )


class BaseSection(Section):
    task: str = "readmission"
    profile: Literal["tiny", "default", "full"] = "default"
    seed: int = 42
    num_hospitals: int = Field(3, ge=2, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_source: Literal["synthetic", "directory"] = "synthetic"
    plugins: tuple[str, ...] = Field(
        (), description="modules imported first; they register tasks from outside privfed"
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from privfed.tasks import available_tasks

        if value not in available_tasks():
            raise ValueError(f"unknown task {value!r}; available: {sorted(available_tasks())}")
        return value

    @property
    def hospitals(self) -> list[str]:
        """Synthetic hospital names, ``hospital_1`` … ``hospital_N``.

        With ``data_source: directory`` the hospitals are the user's folders or site values;
        stages read them from the ingested data, never from here.
        """
        return [f"hospital_{i + 1}" for i in range(self.num_hospitals)]


class GenerateDataSection(Section):
    """Synthetic data: the shared size key; each task adds its own (see :class:`TaskSettings`)."""

    patients_per_hospital: int = Field(400, ge=10, description="tabular tasks: rows per hospital")


class IngestDataSection(Section):
    """Where a user's own data is (``base.data_source: directory``) and how to read it.

    Tasks add keys of their own (the tabular task's ``schema``); see
    :class:`TaskSettings`.
    """

    path: str = "data/external"
    #: None: the tabular schema's ``site_column``, else ``site``.
    site_column: str | None = None
    min_rows_per_site: int = Field(20, ge=2)

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )


def read_schema_file(path: Path) -> dict[str, Any]:
    """The mapping in a schema YAML file; errors name the file."""
    if not path.is_file():
        raise ValueError(
            f"schema file not found: {str(path)!r} (write one with `privfed schema infer`)"
        )
    try:
        data = read_yaml(path)
    except yaml.YAMLError as err:
        raise ValueError(f"schema file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"schema file {str(path)!r} must hold a mapping")
    return data


class ValidateDataSection(Section):
    min_patients_per_hospital: int = Field(20, ge=1)
    max_patients_per_hospital: int = Field(100_000, ge=1)
    min_cases_per_hospital: int = Field(6, ge=3, description="imaging tasks: cases per hospital")

    @model_validator(mode="after")
    def _range_ordered(self) -> ValidateDataSection:
        if self.min_patients_per_hospital > self.max_patients_per_hospital:
            raise ValueError(
                f"min_patients_per_hospital={self.min_patients_per_hospital} is larger than "
                f"max_patients_per_hospital={self.max_patients_per_hospital}"
            )
        return self


class PartitionDataSection(Section):
    scheme: Literal["origin", "dirichlet"] = "origin"
    dirichlet_alpha: float = Field(0.5, gt=0.0)
    quantity_skew: float = Field(0.0, ge=0.0, description="lognormal sigma of hospital sizes")
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)


class ModelSection(Section):
    """Where training starts, and the width of the tabular tasks' networks; tasks add keys."""

    hidden: int = Field(32, ge=4)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    init: str = Field(
        "public",
        min_length=1,
        description="scratch | public (the task's public model, where it has one) | a "
        "state-dict file",
    )


class TrainSection(Section):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    selection: Literal["best_val", "last"] = Field(
        "best_val",
        description="weights every training run keeps: best_val = the epoch/round with the best "
        "validation primary metric | last",
    )


class TrainCentralizedSection(Section):
    epochs: int = Field(15, ge=1)
    seeds: int = Field(
        1,
        ge=1,
        le=20,
        description="centralized models trained with seeds base.seed, base.seed+1, ...; the gate "
        "compares with their mean and records the spread",
    )


class TrainLocalSection(Section):
    epochs: int = Field(15, ge=1)


class PrivacySection(Section):
    enabled: bool = True
    target_epsilon: float | None = Field(1.0, gt=0.0)
    noise_multiplier: float | None = Field(None, gt=0.0)
    max_grad_norm: float | None = Field(
        None, gt=0.0, description="per-example clipping bound; null = the task's DP default"
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    epsilon_budget: float = Field(1.0, gt=0.0)
    accountants: tuple[Literal["rdp", "prv"], ...] = Field(("rdp", "prv"), min_length=1)
    accountant: Literal["rdp", "prv"] = Field(
        "prv", description="calibrates the noise and decides ε (one of accountants)"
    )
    batch_size: int | None = Field(None, ge=1, description="DP expected batch; null = task's")
    lr: float | None = Field(None, gt=0.0, description="DP step size; null = task's")
    local_epochs: int | None = Field(None, ge=1, description="DP local epochs; null = federation's")
    trainable: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="DP trains only parameters under these module names or fnmatch patterns; "
        "null: the task's choice",
    )
    dropout: bool = Field(False, description="dropout layers stay on while DP-SGD trains")
    non_dp_run: bool = Field(
        True,
        description="also train the federation without DP on the same data (the comparison "
        "row); the server then sees those un-noised updates",
    )

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacySection:
        if self.enabled and (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "set exactly one of privacy.target_epsilon and privacy.noise_multiplier "
                f"(got target_epsilon={self.target_epsilon}, "
                f"noise_multiplier={self.noise_multiplier})"
            )
        if self.accountant not in self.accountants:
            raise ValueError(
                f"privacy.accountant={self.accountant!r} must be one of privacy.accountants "
                f"{list(self.accountants)} (it is reported beside the others)"
            )
        return self


class AccountPrivacySection(Section):
    """No keys yet: the stage reads ``privacy``. Present so unknown keys are rejected."""


class EvaluateModelsSection(Section):
    membership_audit: bool = Field(True, description="attack every model (loss, offline LiRA)")
    audit_max_examples: int = Field(
        2000, ge=1, description="members and non-members each capped at this many"
    )


class RegisterModelSection(Section):
    model_name: str = "privfed-readmission"
    experiment: str = "privfed"
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    live: bool = Field(
        True,
        description="every stage logs into the pipeline's MLflow run as it runs, train_federated "
        "each round as it ends (docs/tracking.md); false: register_model logs it all at the end",
    )
    pipeline_run: str = Field(
        "",
        description="the key of the MLflow pipeline run the stages share; empty: this project "
        "folder's (a Kubeflow run sets its job id)",
    )
    candidate: Literal["federated", "federated_dp"] = "federated_dp"
    min_ratio_to_central: float = Field(0.9, gt=0.0)
    gate_split: Literal["val", "test"] = Field(
        "val",
        description="the pooled split whose primary metric the gate's ratio, floor and champion "
        "comparison read: val (test stays for reporting; deciding on test and then reporting it "
        "is selection on test) or test (what the gate read before)",
    )
    metric_floor: dict[str, float] = Field(
        default_factory=dict,
        description="task -> the least primary metric a champion may have (at most, for a "
        "lower-is-better metric); a task not listed has no floor",
    )
    require_dp: bool = Field(
        True, description="refuse to promote a model trained without DP (candidate federated)"
    )

    @field_validator("metric_floor")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        from privfed.tasks import available_tasks

        unknown = sorted(set(value) - set(available_tasks()))
        if unknown:
            raise ValueError(
                f"names no registered task: {unknown}; tasks: {list(available_tasks())}"
            )
        return value
