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
    "boolean_spelling",
    "category_text",
    "CategoricalFeature",
    "NumericFeature",
    "TabularSchema",
    "Target",
    "dominant_values",
    "infer_schema",
    "normalize_booleans",
    "write_schema",
]


def category_text(value: Any) -> str:
    """A category as the schema writes it: ``2.0`` (a CSV integer column with gaps) is ``"2"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.bool_ | bool):
        return str(bool(value)).lower()
    return str(value).strip()


_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


def _truth(value: Any) -> bool | None:
    """True/False for a boolean spelling (any case; 1/0, 1.0/0.0, yes/no); None otherwise."""
    text = category_text(value).lower()
    return True if text in _TRUE else False if text in _FALSE else None


def boolean_spelling(categories: list[str]) -> dict[bool, str] | None:
    """For a yes/no column, the schema's own spelling of True and of False; None otherwise.

    Sites export one boolean as 0/1, True/False or yes/no: a categorical feature whose two
    categories are one true and one false spelling accepts every spelling and stores the
    schema's, so one site's ``True`` is not refused against the schema's ``true``.
    """
    if len(categories) != 2:
        return None
    truths = {_truth(c): c for c in categories}
    if set(truths) != {True, False}:
        return None
    return {True: truths[True], False: truths[False]}


def normalize_booleans(values: pd.Series, categories: list[str]) -> pd.Series:
    """``values`` with every boolean spelling in the schema's; others (and gaps) unchanged."""
    spelling = boolean_spelling(categories)
    if spelling is None:
        return values

    def one(value: Any) -> Any:
        if pd.isna(value):
            return value
        truth = _truth(value)
        return value if truth is None else spelling[truth]

    return values.map(one)


def dominant_values(
    frame: pd.DataFrame,
    *,
    columns: list[str],
    site_column: str = "hospital",
    share: float = 0.3,
    rare_elsewhere: float = 0.05,
) -> list[str]:
    """Numeric values that fill a site's column but are rare at the others: a likely missing-value
    code (0 or -1 written where a lab result is absent), which the draft would take as data.

    Returns one sentence per (column, site, value), naming all three and both shares.
    """
    found = []
    for column in columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        for site, rows in numbers.groupby(frame[site_column], sort=True):
            present = rows.dropna()
            if len(present) < 10:
                continue
            counts = present.value_counts()
            value, count = counts.index[0], int(counts.iloc[0])
            if count / len(present) < share:
                continue
            others = numbers[(frame[site_column] != site) & numbers.notna()]
            elsewhere = float((others == value).mean()) if len(others) else 0.0
            if elsewhere >= rare_elsewhere:
                continue
            found.append(
                f"column {column!r}: value {category_text(value)} fills {count / len(present):.0%} "
                f"of the rows at site {site!r} ({count} of {len(present)}) but {elsewhere:.1%} "
                "elsewhere; if it codes a missing value, blank it and set missing: impute, and "
                "check min/max"
            )
    return found


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
    #: With one file for all hospitals: the column naming each row's hospital. Recorded here
    #: by ``privfed schema infer --site-column`` so ``ingest_data`` reads the same column.
    site_column: str | None = None
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
        if self.site_column and self.site_column in {
            *self.features,
            self.target.column,
            self.id_column,
        }:
            raise ValueError(
                f"site column {self.site_column!r} is also the target, id or a feature column"
            )
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
    site_column: str | None = None,
    max_categories: int = 20,
) -> dict[str, Any]:
    """Draft a schema from a table, for a user to review before trusting it.

    Numeric columns get their observed range; other columns with at most ``max_categories``
    values become categorical; a column with gaps gets ``missing: impute``. The target is a
    classification target when it is not numeric or has at most 10 distinct values.
    ``site_column`` (one file for all hospitals) is recorded, so ingest reads the same column.
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
    skipped = {target, id_column, site_column, *exclude} - {None}
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
            texts = sorted({category_text(v) for v in present.unique()})
            if len(texts) > 2 and all(_truth(t) is not None for t in texts):
                texts = ["false", "true"]  # one yes/no column spelled 0/1 here, True/False there
            features[column] = {"type": "categorical", "categories": texts, "missing": missing}
        else:
            raise ValueError(
                f"column {column!r} is neither numeric nor categorical "
                f"({present.nunique()} distinct values > max_categories={max_categories}); "
                "drop it from the data or pass it in exclude"
            )
    schema: dict[str, Any] = {"version": 1, "target": target_spec}
    if id_column:
        schema["id_column"] = id_column
    if site_column:
        schema["site_column"] = site_column
    schema["features"] = features
    TabularSchema.parse(schema)  # a draft must at least be a valid schema
    return schema


def write_schema(schema: dict[str, Any], path: Path, *, comment: str = "") -> None:
    """YAML with an optional comment header (the draft's provenance)."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    Path(path).write_text(header + yaml.safe_dump(schema, sort_keys=False))
