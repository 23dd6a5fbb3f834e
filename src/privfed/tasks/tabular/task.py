"""Task ``tabular``: classification or regression on any table, described by a user's schema.

The schema (``ingest_data.schema``; the built-in one for synthetic data) fixes the target,
the feature types and the model's input layout. Standardization means/deviations and category
modes come from :meth:`TabularTask.local_statistics`: additive counts and sums that the
federation sums over hospitals, so no hospital's values leave it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from privfed.ingest import check_site_sizes, concat_sites, site_tables
from privfed.io import DataError, read_json, read_parquet, write_parquet
from privfed.metrics import classification_metrics, confusion_counts, regression_metrics
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.tabular.features import encode, local_statistics, normalizers, regression_bins
from privfed.tasks.tabular.generate import SYNTHETIC_SCHEMA, generate_table
from privfed.tasks.tabular.model import TabularMLP
from privfed.tasks.tabular.schema import (
    CategoricalFeature,
    NumericFeature,
    TabularSchema,
    category_text,
    normalize_booleans,
)

if TYPE_CHECKING:
    from privfed.config import PrivFedConfig

__all__ = ["TabularTask"]

TABLE_FILE = "table.parquet"
SCHEMA_FILE = "schema.yaml"


def task_schema(cfg: PrivFedConfig) -> TabularSchema:
    """The user's schema for their own data; the generator's for synthetic data."""
    if cfg.base.data_source == "synthetic":
        return TabularSchema.parse(SYNTHETIC_SCHEMA)
    if cfg.ingest_data.schema_ is None:
        raise DataError(
            "task 'tabular' with base.data_source='directory' needs ingest_data.schema: the path "
            "of a schema file (draft one with `privfed schema infer`)"
        )
    return TabularSchema.parse(cfg.ingest_data.schema_)


def _check_columns(schema: TabularSchema, file: Path, frame: pd.DataFrame) -> None:
    wanted = [schema.target.column, *schema.features] + (
        [schema.id_column] if schema.id_column else []
    )
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        role = {schema.target.column: "target column", schema.id_column: "id column"}
        named = ", ".join(f"{role.get(c, 'feature column')} {c!r}" for c in missing)
        raise DataError(f"{file}: missing {named}; columns present: {list(frame.columns)}")


def _texts(values: pd.Series) -> pd.Series:
    """Categories as the schema writes them (missing stays missing)."""
    return values.map(lambda v: category_text(v) if pd.notna(v) else None)


def _unknown_values(values: pd.Series, allowed: Sequence[str]) -> pd.Series:
    present = _texts(values).dropna()
    return present[~present.isin(list(allowed))]


def _which(bad: pd.Series) -> str:
    """``['0', '1'] (412 rows)``: the distinct values at fault and how many rows hold them."""
    values = sorted(map(str, bad.unique()))
    shown = values[:8] + ([f"... {len(values) - 8} more"] if len(values) > 8 else [])
    return f"{shown} ({len(bad)} row{'' if len(bad) == 1 else 's'})"


def _numbers(where: str, column: str, values: pd.Series, problems: list[str]) -> pd.Series:
    """A numeric column; text or non-finite values are problems naming site, values and rows."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[(numbers.isna() & values.notna()) | np.isinf(numbers.fillna(0.0))]
    if len(bad):
        problems.append(
            f"{where}: column {column!r} must hold finite numbers but has value(s) {_which(bad)}"
        )
    return numbers.where(np.isfinite(numbers)).astype("float64")


def _check_numeric(
    where: str,
    name: str,
    feature: NumericFeature,
    numbers: pd.Series,
    gaps: pd.Series,
    problems: list[str],
) -> None:
    """The schema's range and missing-value rule, named by site, file and column (GX re-checks)."""
    low = numbers < feature.min if feature.min is not None else numbers < -np.inf
    high = numbers > feature.max if feature.max is not None else numbers > np.inf
    outside = numbers[low | high]
    if len(outside):
        problems.append(
            f"{where}: column {name!r} has value(s) {_which(outside)} outside the schema's range "
            f"[{feature.min}, {feature.max}]"
        )
    if feature.missing == "reject" and gaps.any():  # not the text already reported
        problems.append(
            f"{where}: column {name!r} is empty in {int(gaps.sum())} row(s) and the "
            "schema says missing: reject (use impute to fill gaps with the federated mean)"
        )


def _unit_ids(schema: TabularSchema, file: Path, hospital: str, frame: pd.DataFrame) -> list[str]:
    """Row ids, prefixed with the hospital: two sites may both number their rows 1..n."""
    if not schema.id_column:
        return [f"{hospital}-{i:06d}" for i in range(len(frame))]
    ids = frame[schema.id_column]
    if ids.isna().any():
        raise DataError(
            f"site {hospital!r} ({file}): id column {schema.id_column!r} is empty in "
            f"{int(ids.isna().sum())} row(s)"
        )
    texts = _texts(ids)
    repeated = texts[texts.duplicated()]
    if len(repeated):
        raise DataError(
            f"site {hospital!r} ({file}): id column {schema.id_column!r} repeats value(s) "
            f"{_which(repeated)}"
        )
    return [f"{hospital}-{t}" for t in texts]


def _coerce(
    schema: TabularSchema, file: Path, hospital: str, frame: pd.DataFrame, problems: list[str]
) -> pd.DataFrame:
    """Schema types for one site's rows; each value the schema refuses is added to ``problems``
    naming the site, file, column, the values and how many rows hold them.
    """
    where = f"site {hospital!r} ({file})"
    out = pd.DataFrame(index=frame.index)
    out["unit_id"] = _unit_ids(schema, file, hospital, frame)
    for name, feature in schema.features.items():
        if isinstance(feature, NumericFeature):
            out[name] = _numbers(where, name, frame[name], problems)
            _check_numeric(where, name, feature, out[name], frame[name].isna(), problems)
        elif isinstance(feature, CategoricalFeature):
            values = normalize_booleans(_texts(frame[name]), feature.categories)
            bad = _unknown_values(values, feature.categories)
            if len(bad):
                problems.append(
                    f"{where}: column {name!r} has value(s) {_which(bad)} outside the schema's "
                    f"categories {feature.categories}"
                )
            if feature.missing == "reject" and values.isna().any():
                problems.append(
                    f"{where}: column {name!r} is empty in {int(values.isna().sum())} row(s) "
                    "and the schema says missing: reject (impute fills gaps with the mode)"
                )
            out[name] = values
    target = frame[schema.target.column]
    if target.isna().any():
        problems.append(
            f"{where}: target column {schema.target.column!r} is empty in "
            f"{int(target.isna().sum())} row(s); drop those rows or fill them"
        )
    if schema.is_classification:
        classes = schema.target.classes or []
        labels = normalize_booleans(_texts(target), classes)
        bad = _unknown_values(labels, classes)
        if len(bad):
            problems.append(
                f"{where}: target column {schema.target.column!r} has value(s) {_which(bad)} "
                f"outside the schema's classes {classes}"
            )
        out[schema.target.column] = labels
    else:
        out[schema.target.column] = _numbers(where, schema.target.column, target, problems)
    return out


class TabularTask(Task):
    name = "tabular"
    uses_statistics = True
    privacy_unit = "one row of your table (one patient if each patient has one row)"

    @property
    def primary_metric(self) -> str:  # type: ignore[override]
        if self.cfg is not None and not task_schema(self.cfg).is_classification:
            return "r2"
        return "macro_auroc"

    def dp_batch_size(self) -> int:
        return self.cfg.model.tabular.dp_batch_size

    def dp_lr(self) -> float:
        return self.cfg.model.tabular.dp_lr

    def dp_max_grad_norm(self) -> float:
        return self.cfg.model.tabular.dp_max_grad_norm

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        table = generate_table(
            cfg.base.hospitals,
            rows_per_hospital=cfg.generate_data.patients_per_hospital,
            seed=cfg.base.seed,
        )
        write_parquet(table, out_dir / TABLE_FILE)
        return {
            "task": self.name,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            "site_column": "hospital",
            "counts": {"rows": table.groupby("hospital").size().to_dict()},
            "files": [TABLE_FILE],
        }

    def site_column(self, configured: str | None) -> str:
        """The schema's ``site_column``; ``ingest_data.site_column`` only if it agrees."""
        recorded = task_schema(self.cfg).site_column
        if recorded and configured and recorded != configured:
            raise DataError(
                f"the schema's site_column is {recorded!r} but ingest_data.site_column is "
                f"{configured!r}; set the column once (in the schema) and leave "
                "ingest_data.site_column null"
            )
        return recorded or super().site_column(configured)

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        cfg = self.cfg
        schema = task_schema(cfg)
        tables = site_tables(
            source,
            table=None,
            site_column=site_column,
            setting="set site_column in the schema file (ingest_data.schema)",
        )
        for t in tables:
            _check_columns(schema, t.file, t.frame)
        check_site_sizes(tables, minimum=cfg.ingest_data.min_rows_per_site)
        problems: list[str] = []
        coerced = [
            type(t)(t.hospital, t.file, _coerce(schema, t.file, t.hospital, t.frame, problems))
            for t in tables
        ]
        if problems:  # every site's at once: a user fixes their exports in one pass
            raise DataError(
                f"{len(problems)} problem(s) with values the schema does not allow:\n  "
                + "\n  ".join(problems)
            )
        table = concat_sites(coerced)
        table = table[["unit_id", "hospital", *schema.features, schema.target.column]]
        write_parquet(table, out_dir / TABLE_FILE)
        (out_dir / SCHEMA_FILE).write_text(yaml.safe_dump(schema.model_dump(mode="json")))
        return {
            "task": self.name,
            "hospitals": [t.hospital for t in tables],
            "sources": {t.hospital: str(t.file) for t in tables},
            "counts": {"rows": {t.hospital: len(t.frame) for t in tables}},
            "files": [TABLE_FILE, SCHEMA_FILE],
        }

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        cfg = self.cfg
        from privfed.tasks.tabular import checks  # GX is slow to import; only here

        hospitals = read_json(raw_dir / "manifest.json")["hospitals"]
        return checks.table_checks(
            task_schema(cfg),
            read_parquet(raw_dir / TABLE_FILE),
            hospitals=hospitals,
            min_rows=cfg.validate_data.min_patients_per_hospital,
        )

    def units(self, raw_dir: Path) -> pd.DataFrame:
        table = read_parquet(raw_dir / TABLE_FILE)
        schema = TabularSchema.parse(yaml.safe_load((raw_dir / SCHEMA_FILE).read_text()))
        target = table[schema.target.column]
        label = target.astype(str) if schema.is_classification else regression_bins(target)
        return pd.DataFrame(
            {"unit_id": table["unit_id"], "hospital": table["hospital"], "label": label}
        )

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        table = read_parquet(raw_dir / TABLE_FILE)
        write_parquet(table[table["unit_id"].isin(set(unit_ids))], out_dir / TABLE_FILE)
        shutil.copyfile(raw_dir / SCHEMA_FILE, out_dir / SCHEMA_FILE)

    def _frame(self, schema: TabularSchema, split_dirs: Sequence[Path]) -> pd.DataFrame:
        """The rows of ``split_dirs``, after checking they were ingested with ``schema``."""
        if not split_dirs:
            raise ValueError("load_dataset needs at least one split directory")
        for d in split_dirs:
            stored = TabularSchema.parse(yaml.safe_load((Path(d) / SCHEMA_FILE).read_text()))
            if stored != schema:
                raise DataError(
                    "the schema in params (ingest_data.schema) differs from the one "
                    f"{Path(d) / SCHEMA_FILE} was ingested with; rerun ingest "
                    "(`dvc repro -f ingest_data`). Keep the schema file inside ingest_data.path "
                    "and DVC reruns it by itself."
                )
        return pd.concat(
            [read_parquet(Path(d) / TABLE_FILE) for d in split_dirs], ignore_index=True
        )

    def load_dataset(self, split_dirs: Sequence[Path]) -> TensorDataset:
        cfg = self.cfg
        schema = task_schema(cfg)
        numeric, codes, target = encode(self._frame(schema, split_dirs), schema)
        y = torch.from_numpy(target)
        return TensorDataset(
            torch.from_numpy(numeric).float(),
            torch.from_numpy(codes),
            y if target.dtype == np.int64 else y.float(),
        )

    def local_statistics(self, split_dirs: Sequence[Path]) -> dict[str, np.ndarray]:
        cfg = self.cfg
        schema = task_schema(cfg)
        return local_statistics(*encode(self._frame(schema, split_dirs), schema), schema)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        cfg = self.cfg
        schema = task_schema(cfg)
        model = TabularMLP(
            n_numeric=len(schema.numeric),
            category_sizes=[len(c) for c in schema.categorical.values()],
            hidden=cfg.model.hidden,
            dropout=cfg.model.dropout,
            n_outputs=len(schema.target.classes or []) if schema.is_classification else 1,
        )
        if statistics is not None:
            model.set_statistics(normalizers(statistics, schema))
        return model

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        numeric, codes, y = batch
        out = model(numeric, codes)
        if y.dtype == torch.int64:
            return nn.functional.cross_entropy(out, y)
        core = model._module if hasattr(model, "_module") else model  # Opacus' wrapper
        scaled = (y - core.target_mean) / core.target_std
        return nn.functional.mse_loss(out.squeeze(1), scaled)

    @torch.no_grad()
    def _outputs(
        self, model: nn.Module, dataset: Dataset, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        device = next(model.parameters()).device
        outs, ys = [], []
        for numeric, codes, y in DataLoader(dataset, batch_size=batch_size):
            outs.append(model(numeric.to(device), codes.to(device)).cpu())
            ys.append(y)
        return torch.cat(outs).numpy(), torch.cat(ys).numpy()

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        out, y = self._outputs(model, dataset, batch_size)
        if y.dtype == np.int64:
            logits = torch.from_numpy(out)
            loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))
            probs = torch.softmax(logits, dim=-1).numpy()
            return classification_metrics(y, probs, loss if len(y) else math.nan)
        pred = out[:, 0] * float(model.target_std) + float(model.target_mean)
        return regression_metrics(y, pred)

    def confusion_matrix(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, Any] | None:
        schema = task_schema(self.cfg) if self.cfg is not None else None
        if schema is None or not schema.is_classification:
            return None
        out, y = self._outputs(model, dataset, batch_size)
        return confusion_counts(y, out.argmax(axis=1), list(schema.target.classes or []))
