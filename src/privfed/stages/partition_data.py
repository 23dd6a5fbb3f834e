"""Stage ``partition_data``: one folder per hospital with train/val/test splits.

``origin`` keeps each patient at the hospital that recorded them (the real federated setting);
``dirichlet`` re-deals patients to hospitals with label proportions ~ Dir(α) per class, and
``quantity_skew`` > 0 makes hospital sizes lognormal. Splits are stratified by label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privfed.config import PrivFedConfig
from privfed.io import DataError, atomic_dir, read_json, write_json
from privfed.partitions import COHORTS_DIR
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base", "partition_data", "profiles"),
    inputs={"raw": "data/raw", "validation": "reports/validation"},
    outputs={"partitions": "data/partitions", "stats": "metrics/partition_stats.json"},
)

SPLITS = ("train", "val", "test")


def dirichlet_assignment(
    units: pd.DataFrame, hospitals: list[str], *, alpha: float, quantity_skew: float, seed: int
) -> pd.Series:
    """Re-deal units to hospitals: per label, hospital shares ~ Dir(α) (times size weights)."""
    rng = np.random.default_rng([seed, 7])
    size_weight = (
        rng.lognormal(0.0, quantity_skew, len(hospitals))
        if quantity_skew > 0
        else np.ones(len(hospitals))
    )
    assignment = pd.Series(index=units.index, dtype=object)
    for _, group in units.groupby("label", sort=True):
        shares = rng.dirichlet(np.full(len(hospitals), alpha)) * size_weight
        shares /= shares.sum()
        order = rng.permutation(group.index.to_numpy())
        cuts = (np.cumsum(shares)[:-1] * len(order)).round().astype(int)
        for hospital, idx in zip(hospitals, np.split(order, cuts), strict=True):
            assignment.loc[idx] = hospital
    return assignment


def quantity_subsample(units: pd.DataFrame, *, sigma: float, seed: int) -> pd.DataFrame:
    """Keep a lognormal-sized share of each hospital's units (largest hospital keeps all)."""
    rng = np.random.default_rng([seed, 11])
    hospitals = sorted(units["hospital"].unique())
    weights = rng.lognormal(0.0, sigma, len(hospitals))
    keep_share = dict(zip(hospitals, weights / weights.max(), strict=True))
    parts = []
    for h, group in units.groupby("hospital", sort=True):
        n = max(10, int(round(len(group) * keep_share[h])))
        parts.append(group.sample(n=min(n, len(group)), random_state=int(rng.integers(1 << 31))))
    return pd.concat(parts)


def stratified_split(
    units: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """train/val/test per unit, stratified by label."""
    rng = np.random.default_rng([seed, 13])
    split = pd.Series("train", index=units.index, dtype=object)
    for _, group in units.groupby("label", sort=True):
        order = rng.permutation(group.index.to_numpy())
        n_test = int(round(len(order) * test_fraction))
        n_val = int(round(len(order) * val_fraction))
        split.loc[order[:n_test]] = "test"
        split.loc[order[n_test : n_test + n_val]] = "val"
    return split


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    report = read_json(Path(inputs["validation"]) / "report.json")
    if not report.get("success"):
        raise DataError(f"validation did not pass ({inputs['validation']}); refusing to partition")
    task = get_task(cfg.base.task, cfg)
    p = cfg.partition_data
    raw = Path(inputs["raw"])
    units = task.units(raw)
    hospitals = sorted(units["hospital"].unique())
    if p.scheme == "dirichlet":
        units = units.assign(
            hospital=dirichlet_assignment(
                units,
                hospitals,
                alpha=p.dirichlet_alpha,
                quantity_skew=p.quantity_skew,
                seed=cfg.base.seed,
            )
        )
    elif p.quantity_skew > 0:
        units = quantity_subsample(units, sigma=p.quantity_skew, seed=cfg.base.seed)
    stats: dict[str, Any] = {"scheme": p.scheme, "hospitals": {}}
    with atomic_dir(outputs["partitions"]) as tmp:
        for hospital, group in units.groupby("hospital", sort=True):
            split = stratified_split(
                group,
                val_fraction=p.val_fraction,
                test_fraction=p.test_fraction,
                seed=cfg.base.seed,
            )
            stats["hospitals"][hospital] = {}
            for name in SPLITS:
                ids = group.loc[split == name, "unit_id"].tolist()
                if not ids:
                    raise DataError(
                        f"hospital {hospital!r} has no units in split {name!r} "
                        f"({len(group)} units); lower the fractions or add data"
                    )
                task.write_subset(raw, ids, tmp / str(hospital) / name)
                labels = group.loc[split == name, "label"].value_counts().sort_index()
                stats["hospitals"][hospital][name] = {
                    "n": len(ids),
                    "labels": {str(k): int(v) for k, v in labels.items()},
                }
            log.info(
                "partitioned %s: %s",
                hospital,
                {k: v["n"] for k, v in stats["hospitals"][hospital].items()},
            )
        cohorts = task.write_evaluation_cohorts(raw, tmp / COHORTS_DIR)
        if cohorts:
            stats["evaluation_cohorts"] = cohorts
            log.info("evaluation-only cohorts (no hospital trains on them): %s", cohorts)
    stats["total"] = int(len(units))
    write_json(stats, outputs["stats"])
    return stats
