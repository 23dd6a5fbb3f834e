"""Task ``tabular``'s keys: ``ingest_data.schema`` and ``model.tabular``.

Its MLP uses the shared ``model.hidden`` and ``model.dropout``, its generator the shared
``generate_data.patients_per_hospital``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from privfed.config.sections import Section, TaskSettings, read_schema_file

__all__ = ["SETTINGS", "TabularIngestSettings", "TabularModelSection"]


class TabularIngestSettings(Section):
    """``ingest_data.schema``: the user's table schema (see ``privfed schema infer``).

    Written in params.yaml as a path to the user's schema YAML; loading resolves it to the
    schema's contents, so the resolved config that travels to Kubeflow pods and Flower apps
    carries the schema itself, not a path they cannot open.
    """

    schema_: dict[str, Any] | None = Field(None, alias="schema")

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    @field_validator("schema_", mode="before")
    @classmethod
    def _read_schema_file(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return read_schema_file(Path(value))
        return value

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from privfed.tasks.tabular.schema import TabularSchema

        return TabularSchema.parse(value).model_dump(mode="json")


class TabularModelSection(Section):
    """DP-SGD settings for a consortium's own table (``model.tabular``)."""

    dp_batch_size: int = Field(32, ge=1, description="DP-SGD expected batch")
    dp_lr: float = Field(0.05, gt=0.0, description="DP-SGD step size")
    dp_max_grad_norm: float = Field(0.3, gt=0.0, description="DP-SGD clipping bound")


SETTINGS = TaskSettings(
    nested={"model": TabularModelSection}, flat={"ingest_data": TabularIngestSettings}
)
