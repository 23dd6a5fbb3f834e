"""Turn a hospital's raw tables into model tensors.

Scaling uses fixed clinical reference values (``schema.VARIABLE_RANGES``), never statistics of
any hospital's data: every site featurizes identically and nothing about one site's distribution
leaks into another's model input. Sequences are aligned to each patient's discharge (last day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from privfed.tasks.readmission.schema import (
    COMORBIDITIES,
    LABELS,
    LABS,
    MEDICATIONS,
    VARIABLE_RANGES,
    VITALS,
)

__all__ = ["Features", "featurize", "to_dataset"]


@dataclass(frozen=True)
class Features:
    vitals: np.ndarray  # (n, len(VITALS), seq_days)
    labs: np.ndarray  # (n, len(LABS), seq_weeks)
    static: np.ndarray  # (n, n_static)
    genes: np.ndarray  # (n, n_genes)
    labels: np.ndarray  # (n,) int64 in 0..2
    patient_ids: np.ndarray


def _scale(variable: str, values: np.ndarray) -> np.ndarray:
    _, _, mean, sd, log = VARIABLE_RANGES[variable]
    x = np.log(np.maximum(values, 1e-6)) if log else values
    return (x - mean) / sd


def _sequence(
    ts: pd.DataFrame,
    row_of: pd.Series,
    last_day: np.ndarray,
    variables: tuple[str, ...],
    length: int,
    step: int,
) -> np.ndarray:
    """Place each measurement at its position counted back from discharge; forward-fill gaps."""
    out = np.full((len(last_day), len(variables), length), np.nan, dtype=np.float32)
    sub = ts[ts["variable"].isin(variables)]
    rows = row_of.loc[sub["patient_id"]].to_numpy()
    back = (last_day[rows] - sub["day"].to_numpy()) // step
    keep = back < length
    channel = pd.Categorical(sub["variable"], categories=variables).codes
    scaled = np.empty(len(sub), dtype=np.float32)
    for k, v in enumerate(variables):
        mask = channel == k
        scaled[mask] = _scale(v, sub["value"].to_numpy()[mask])
    out[rows[keep], channel[keep], length - 1 - back[keep]] = scaled[keep]
    # forward fill along time, then zeros (= reference value) where nothing was measured yet
    frame = out.reshape(-1, length)
    idx = np.where(~np.isnan(frame), np.arange(length)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = frame[np.arange(frame.shape[0])[:, None], idx]
    return np.nan_to_num(filled, nan=0.0).reshape(out.shape)


def featurize(
    patients: pd.DataFrame, ts: pd.DataFrame, *, seq_days: int, seq_weeks: int
) -> Features:
    patients = patients.reset_index(drop=True)
    row_of = pd.Series(np.arange(len(patients)), index=patients["patient_id"].to_numpy())
    last_day = patients["followup_days"].to_numpy() - 1
    vitals = _sequence(ts, row_of, last_day, VITALS, seq_days, 1)
    labs = _sequence(ts, row_of, last_day, LABS, seq_weeks, 7)
    static = np.column_stack(
        [
            (patients["age"].to_numpy() - 65) / 15,
            (patients["sex"].to_numpy() == "F").astype(float),
            *[patients[f"comorbidity_{c}"].to_numpy() for c in COMORBIDITIES],
            *[patients[f"med_{m}"].to_numpy() for m in MEDICATIONS],
        ]
    ).astype(np.float32)
    gene_cols = sorted(c for c in patients.columns if c.startswith("gene_"))
    genes = patients[gene_cols].to_numpy(dtype=np.float32)
    label_index = {name: i for i, name in enumerate(LABELS)}
    labels = patients["readmission_risk"].map(label_index).to_numpy(dtype=np.int64)
    return Features(vitals, labs, static, genes, labels, patients["patient_id"].to_numpy())


def to_dataset(features: Features) -> TensorDataset:
    arrays = (features.vitals, features.labs, features.static, features.genes, features.labels)
    # np.array copies: pandas may hand out read-only views, which torch refuses to wrap.
    return TensorDataset(*(torch.from_numpy(np.array(a)) for a in arrays))
