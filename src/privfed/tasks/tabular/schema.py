"""The schema a user writes for their own table: target, feature types, ranges, categories.

Everything else is derived from it: the ingest checks, the Great Expectations suite, the
encoding and the model's input layout. ``privfed schema infer`` drafts one from the data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "category_text",
    "CategoricalFeature",
    "NumericFeature",
    "TabularSchema",
    "Target",
    "infer_schema",
    "write_schema",
]


def category_text(value: Any) -> str:
    """A category as the schema writes it: ``2.0`` (a CSV integer column with gaps) is ``"2"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.bool_ | bool):
        return str(bool(value)).lower()
    return str(value).strip()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeature(_Strict):
    type: Literal["numeric"] = "numeric"
    min: float | None = None
    max: float | None = None
    #: ``impute``: a missing value becomes the federated mean; ``reject``: fails validation.
    missing: Literal["impute", "reject"] = "reject"

    @model_validator(mode="after")
    def _ordered(self) -> NumericFeature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min={self.min} is larger than max={self.max}")
        return self


class CategoricalFeature(_Strict):
    type: Literal["categorical"] = "categorical"
    categories: list[str] = Field(min_length=1)
    #: ``impute``: a missing value becomes the federated mode; ``reject``: fails validation.
    missing: Literal["impute", "reject"] = "reject"

    @model_validator(mode="after")
    def _unique(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories repeat a value: {self.categories}")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class Target(_Strict):
    column: str
    kind: Literal["classification", "regression"]
    classes: list[str] | None = None

    @model_validator(mode="after")
    def _classes(self) -> Target:
        if self.kind == "classification":
            if not self.classes or len(set(self.classes)) < 2:
                raise ValueError(
                    f"a classification target needs at least 2 distinct classes, got {self.classes}"
                )
        elif self.classes is not None:
            raise ValueError("classes are only for kind: classification")
        return self


class TabularSchema(_Strict):
    version: Literal[1] = 1
    target: Target
    id_column: str | None = None
    features: dict[str, Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _target_not_a_feature(self) -> TabularSchema:
        reserved = {"unit_id", "hospital"}
        clash = reserved & (set(self.features) | {self.target.column})
        if clash:
            raise ValueError(f"column name(s) {sorted(clash)} are reserved; rename them")
        if self.target.column in self.features:
            raise ValueError(f"target column {self.target.column!r} is also listed as a feature")
        if self.id_column and self.id_column in self.features:
            raise ValueError(f"id column {self.id_column!r} is also listed as a feature")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> TabularSchema:
        """Validate a schema mapping; the error lists each bad key and value."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            lines = [
                f"  {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in err.errors()
            ]
            raise ValueError("invalid tabular schema:\n" + "\n".join(lines)) from None

    @property
    def numeric(self) -> list[str]:
        return [n for n, f in self.features.items() if isinstance(f, NumericFeature)]

    @property
    def categorical(self) -> dict[str, list[str]]:
        return {
            n: f.categories for n, f in self.features.items() if isinstance(f, CategoricalFeature)
        }

    @property
    def is_classification(self) -> bool:
        return self.target.kind == "classification"


def _numeric_bound(value: float, *, up: bool) -> float:
    """An observed extreme, rounded outward to 3 significant digits for a readable draft."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    digits = 2 - math.floor(math.log10(abs(value)))
    scale = 10.0**-digits
    return round((math.ceil if up else math.floor)(value / scale) * scale, max(digits, 0))


def infer_schema(
    frame: pd.DataFrame,
    *,
    target: str,
    kind: str | None = None,
    exclude: tuple[str, ...] = (),
    id_column: str | None = None,
    max_categories: int = 20,
) -> dict[str, Any]:
    """Draft a schema from a table, for a user to review before trusting it.

    Numeric columns get their observed range; other columns with at most ``max_categories``
    values become categorical; a column with gaps gets ``missing: impute``. The target is a
    classification target when it is not numeric or has at most 10 distinct values.
    """
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} not found; columns: {list(frame.columns)}")
    y = frame[target].dropna()
    if kind is None:
        discrete = not pd.api.types.is_numeric_dtype(y) or y.nunique() <= 10
        kind = "classification" if discrete else "regression"
    target_spec: dict[str, Any] = {"column": target, "kind": kind}
    if kind == "classification":
        target_spec["classes"] = sorted({category_text(v) for v in y.unique()})
    features: dict[str, Any] = {}
    skipped = {target, id_column, *exclude} - {None}
    for column in frame.columns:
        if column in skipped:
            continue
        values = frame[column]
        missing = "impute" if values.isna().any() else "reject"
        present = values.dropna()
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            features[column] = {
                "type": "numeric",
                "min": _numeric_bound(float(present.min()), up=False) if len(present) else None,
                "max": _numeric_bound(float(present.max()), up=True) if len(present) else None,
                "missing": missing,
            }
        elif present.nunique() <= max_categories:
            features[column] = {
                "type": "categorical",
                "categories": sorted({category_text(v) for v in present.unique()}),
                "missing": missing,
            }
        else:
            raise ValueError(
                f"column {column!r} is neither numeric nor categorical "
                f"({present.nunique()} distinct values > max_categories={max_categories}); "
                "drop it from the data or pass it in exclude"
            )
    schema = {"version": 1, "target": target_spec, "features": features}
    if id_column:
        schema["id_column"] = id_column
    TabularSchema.parse(schema)  # a draft must at least be a valid schema
    return schema


def write_schema(schema: dict[str, Any], path: Path, *, comment: str = "") -> None:
    """YAML with an optional comment header (the draft's provenance)."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    Path(path).write_text(header + yaml.safe_dump(schema, sort_keys=False))
