"""Typed, validated view of ``params.yaml``.

``params.yaml`` is the only place values are written. It has a ``base`` section, one section per
stage (plus the shared ``model``/``train``/``privacy`` sections) and ``profiles``: overlays that
replace individual keys when ``base.profile`` names them. Validation errors name the bad key and
value so a user can fix the file without reading code.

This package knows no task: each registered task adds its own keys to ``generate_data``,
``ingest_data`` and ``model`` (its :class:`TaskSettings`), and :func:`config_model` composes the
schema from the registry (:mod:`privfed.tasks`).
"""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError, create_model, model_validator

from privfed.config.deployment import ClusterSection, KubeflowSection
from privfed.config.federation import (
    SECAGG_MODULUS,
    SECAGG_STRATEGIES,
    SecureAggregationSection,
    TrainFederatedSection,
)
from privfed.config.sections import (
    TASK_SECTIONS,
    AccountPrivacySection,
    BaseSection,
    ConfigError,
    EvaluateModelsSection,
    GenerateDataSection,
    IngestDataSection,
    ModelSection,
    PartitionDataSection,
    PrivacySection,
    RegisterModelSection,
    Section,
    TaskSettings,
    TrainCentralizedSection,
    TrainLocalSection,
    TrainSection,
    ValidateDataSection,
)
from privfed.config.strategy_registry import get_strategy, strategy_names
from privfed.config.yamlfile import read_yaml

__all__ = [
    "SECAGG_MODULUS",
    "SECAGG_STRATEGIES",
    "STAGES",
    "ClusterSection",
    "ConfigError",
    "KubeflowSection",
    "PrivFedConfig",
    "SecureAggregationSection",
    "TaskSettings",
    "config_from_dict",
    "deep_merge",
    "config_model",
    "load_config",
    "resolved_config",
]

STAGES = (
    "generate_data",
    "ingest_data",
    "validate_data",
    "partition_data",
    "train_centralized",
    "train_local",
    "train_federated",
    "account_privacy",
    "evaluate_models",
    "register_model",
)


class PrivFedConfig(Section):
    """The whole params.yaml. Validate through :func:`config_model` (it adds the tasks' keys)."""

    base: BaseSection = BaseSection()
    generate_data: GenerateDataSection = GenerateDataSection()
    ingest_data: IngestDataSection = IngestDataSection()
    validate_data: ValidateDataSection = ValidateDataSection()
    partition_data: PartitionDataSection = PartitionDataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    train_centralized: TrainCentralizedSection = TrainCentralizedSection()
    train_local: TrainLocalSection = TrainLocalSection()
    train_federated: TrainFederatedSection = TrainFederatedSection()
    privacy: PrivacySection = PrivacySection()
    account_privacy: AccountPrivacySection = AccountPrivacySection()
    evaluate_models: EvaluateModelsSection = EvaluateModelsSection()
    register_model: RegisterModelSection = RegisterModelSection()
    cluster: ClusterSection = ClusterSection()
    kubeflow: KubeflowSection = KubeflowSection()

    @model_validator(mode="after")
    def _cross_section(self) -> PrivFedConfig:
        fed = self.train_federated
        if fed.min_train_nodes is not None and fed.min_train_nodes > self.base.num_hospitals:
            raise ValueError(
                f"train_federated.min_train_nodes={fed.min_train_nodes} exceeds "
                f"base.num_hospitals={self.base.num_hospitals}"
            )
        secagg = fed.secure_aggregation
        largest = self.base.num_hospitals * secagg.quantization_range
        if secagg.enabled and largest >= SECAGG_MODULUS:
            raise ValueError(
                "train_federated.secure_aggregation.quantization_range="
                f"{secagg.quantization_range} x base.num_hospitals={self.base.num_hospitals} "
                f"= {largest} does not fit SecAgg+'s modulus 2**32 = {SECAGG_MODULUS}: the sum "
                "of the hospitals' quantized updates would wrap around; use a "
                f"quantization_range below {SECAGG_MODULUS // self.base.num_hospitals}"
            )
        refuses_dp = get_strategy(fed.strategy).hospital.refuses_dp
        if refuses_dp is not None and self.privacy.enabled:
            allowed = strategy_names(where=lambda spec: spec.hospital.refuses_dp is None)
            raise ValueError(
                f"train_federated.strategy={fed.strategy} cannot run with privacy.enabled=true: "
                f"{refuses_dp}; set privacy.enabled: false (and register_model.candidate: "
                f"federated) or use one of {' | '.join(allowed)} with DP"
            )
        if self.register_model.candidate == "federated_dp" and not self.privacy.enabled:
            raise ValueError("register_model.candidate='federated_dp' needs privacy.enabled=true")
        if (
            self.register_model.candidate == "federated"
            and self.privacy.enabled
            and not self.privacy.non_dp_run
        ):
            raise ValueError(
                "register_model.candidate='federated' needs the non-DP run, which "
                "privacy.non_dp_run=false turns off"
            )
        return self

    def as_flat_dict(self) -> dict[str, Any]:
        """Dotted-key view for MLflow params and the Flower run config."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                flat[prefix] = value

        walk("", self.model_dump(mode="json"))
        return flat

    @property
    def epsilon_budget(self) -> float:
        return self.privacy.epsilon_budget if self.privacy.enabled else math.inf


_COMPOSED: dict[tuple[Any, ...], type[PrivFedConfig]] = {}


def config_model() -> type[PrivFedConfig]:
    """:class:`PrivFedConfig` with every registered task's keys (built once per registry).

    Raises:
        ConfigError: two tasks declare the same key, or a task's key shadows a shared one.
    """
    from privfed.tasks import registry_key, task_settings

    key = registry_key()
    if key not in _COMPOSED:
        settings = {entry.name: task_settings(entry.name) or TaskSettings() for entry in key}
        sections = {name: _compose_section(name, settings) for name in TASK_SECTIONS}
        _COMPOSED[key] = create_model(
            "PrivFedConfig",
            __base__=PrivFedConfig,
            __module__=__name__,
            **{name: (cls, cls()) for name, cls in sections.items()},
        )
    return _COMPOSED[key]


def _compose_section(section: str, settings: dict[str, TaskSettings]) -> type[Section]:
    """The shared ``section`` plus each task's flat keys and ``<section>.<task>`` sub-sections."""
    shared = cast("type[Section]", PrivFedConfig.model_fields[section].annotation)
    owner = {name: "every task" for name in shared.model_fields}
    flat: list[type[Section]] = []
    nested: dict[str, Any] = {}
    for task, declared in settings.items():
        keys = list(declared.flat[section].model_fields) if section in declared.flat else []
        keys += [task] if section in declared.nested else []
        for k in keys:
            if k in owner:
                raise ConfigError(
                    f"task {task!r} declares {section}.{k}, which {owner[k]} already uses"
                )
            owner[k] = f"task {task!r}"
        if section in declared.flat:
            flat.append(declared.flat[section])
        if section in declared.nested:
            model = declared.nested[section]
            nested[task] = (model, model())
    if not flat and not nested:
        return shared
    return create_model(shared.__name__, __base__=(shared, *flat), __module__=__name__, **nested)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` laid over ``base`` key by key, nested mappings merged; inputs stay unchanged."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {item['msg']}{shown}")
    return "invalid params:\n" + "\n".join(lines)


def config_from_dict(raw: dict[str, Any]) -> PrivFedConfig:
    """Apply the selected profile overlay and validate.

    Raises:
        ConfigError: naming each bad key and value.
    """
    raw = dict(raw or {})
    profiles = raw.pop("profiles", {}) or {}
    profile = (raw.get("base") or {}).get("profile", "default")
    if profile not in profiles and profile != "default":
        raise ConfigError(
            f"base.profile={profile!r} has no overlay under 'profiles' "
            f"(available: {sorted(profiles)})"
        )
    merged = deep_merge(raw, profiles.get(profile) or {})
    import_plugins((merged.get("base") or {}).get("plugins") or ())
    _task_strategy(merged)
    try:
        return config_model().model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def _task_strategy(merged: dict[str, Any]) -> None:
    """``train_federated.strategy`` null or absent -> the task's own (:class:`TaskSettings`).

    An unknown ``base.task`` is left for validation to name with the available tasks.
    """
    from privfed.tasks import available_tasks, task_settings

    fed = merged.get("train_federated")
    if fed is not None and not isinstance(fed, dict):
        return  # validation names the bad section
    if (fed or {}).get("strategy") is not None:
        return
    task = (merged.get("base") or {}).get("task", "readmission")
    if task not in available_tasks():
        return
    merged["train_federated"] = {
        **(fed or {}),
        "strategy": (task_settings(task) or TaskSettings()).strategy,
    }


def import_plugins(modules: Any) -> None:
    """Import ``base.plugins``: modules that register tasks (:func:`privfed.tasks.register_task`).

    Raises:
        ConfigError: a module cannot be imported (its name and the reason).
    """
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"base.plugins must be a list of module names, got {modules!r}")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"base.plugins: cannot import {module!r}: {err}") from None


def resolved_config(data: dict[str, Any]) -> PrivFedConfig:
    """Validate an already-resolved config (``model_dump`` of one), without profile overlays.

    This is how the config travels to the Flower ServerApp and ClientApps.
    """
    import_plugins((data.get("base") or {}).get("plugins") or ())
    data = copy.deepcopy(data)
    _task_strategy(data)
    try:
        return config_model().model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path = "params.yaml") -> PrivFedConfig:
    """Load and validate a params file.

    Raises:
        ConfigError: the file is missing, empty, not YAML (a key written twice included), or
            holds a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not raw:
        raise ConfigError(
            f"{path} is empty: it must hold at least a 'base' section (copy the project's "
            "params.yaml and edit it); an empty file would silently run every default"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return config_from_dict(raw)
