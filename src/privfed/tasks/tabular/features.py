"""Rows to tensors, and the sufficient statistics behind standardization and imputation.

A hospital never shares its rows: it shares counts, sums and sums of squares per numeric
column and counts per category (:func:`local_statistics`). These are additive, so the server's
elementwise sum over hospitals equals the statistics of the pooled table, and
:func:`normalizers` turns either into means, standard deviations and modes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from privfed.tasks.tabular.schema import TabularSchema, category_text

__all__ = ["encode", "local_statistics", "normalizers", "regression_bins"]


def encode(frame: pd.DataFrame, schema: TabularSchema) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric matrix (NaN = missing), category codes (-1 = missing) and the target array.

    Classification targets become class indices in ``schema.target.classes`` order.
    """
    numeric = (
        frame[schema.numeric].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        if schema.numeric
        else np.zeros((len(frame), 0))
    )
    codes = np.full((len(frame), len(schema.categorical)), -1, dtype=np.int64)
    for j, (column, categories) in enumerate(schema.categorical.items()):
        index = {c: i for i, c in enumerate(categories)}
        codes[:, j] = [
            index.get(category_text(v), -1) if pd.notna(v) else -1 for v in frame[column].tolist()
        ]
    y = frame[schema.target.column]
    if schema.is_classification:
        index = {c: i for i, c in enumerate(schema.target.classes or [])}
        target = np.array([index[category_text(v)] for v in y.tolist()], dtype=np.int64)
    else:
        target = y.to_numpy(dtype=np.float64, copy=True)
    return numeric, codes, target


def local_statistics(
    numeric: np.ndarray, codes: np.ndarray, target: np.ndarray, schema: TabularSchema
) -> dict[str, np.ndarray]:
    """Additive sufficient statistics of one hospital's training rows."""
    present = ~np.isnan(numeric)
    filled = np.where(present, numeric, 0.0)
    counts = [
        np.bincount(codes[:, j][codes[:, j] >= 0], minlength=len(categories))
        for j, categories in enumerate(schema.categorical.values())
    ]
    stats = {
        "numeric_count": present.sum(axis=0).astype(np.float64),
        "numeric_sum": filled.sum(axis=0),
        "numeric_sumsq": (filled**2).sum(axis=0),
        "category_counts": (np.concatenate(counts).astype(np.float64) if counts else np.zeros(0)),
        "rows": np.array([float(len(target))]),
    }
    if not schema.is_classification:
        stats |= {
            "target_sum": np.array([float(target.sum())]),
            "target_sumsq": np.array([float((target**2).sum())]),
        }
    return stats


def _mean_std(
    count: np.ndarray, total: np.ndarray, sumsq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    safe = np.maximum(count, 1.0)
    mean = total / safe
    var = np.maximum(sumsq / safe - mean**2, 0.0)
    std = np.sqrt(var)
    # a constant (or absent) column: leave it unscaled rather than divide by zero
    return np.where(count > 0, mean, 0.0), np.where(std > 1e-12, std, 1.0)


def normalizers(stats: Mapping[str, np.ndarray], schema: TabularSchema) -> dict[str, torch.Tensor]:
    """Means, standard deviations (population), category modes and target scaling."""
    mean, std = _mean_std(stats["numeric_count"], stats["numeric_sum"], stats["numeric_sumsq"])
    modes, start = [], 0
    for categories in schema.categorical.values():
        block = np.asarray(stats["category_counts"][start : start + len(categories)])
        modes.append(float(np.argmax(block)) if block.sum() > 0 else 0.0)
        start += len(categories)
    out = {
        "mean": torch.tensor(mean, dtype=torch.float32),
        "std": torch.tensor(std, dtype=torch.float32),
        "mode": torch.tensor(modes, dtype=torch.float32),
    }
    if not schema.is_classification:
        t_mean, t_std = _mean_std(stats["rows"], stats["target_sum"], stats["target_sumsq"])
        out |= {
            "target_mean": torch.tensor(t_mean, dtype=torch.float32),
            "target_std": torch.tensor(t_std, dtype=torch.float32),
        }
    return out


def regression_bins(target: pd.Series, bins: int = 4) -> pd.Series:
    """Quantile bins of a numeric target: the strata a regression task's splits keep balanced."""
    ranks = target.rank(method="first")
    return pd.qcut(ranks, q=min(bins, max(1, len(target))), labels=False).astype(int).astype(str)
