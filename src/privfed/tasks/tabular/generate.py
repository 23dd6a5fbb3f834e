"""A synthetic table for the ``tabular`` task: cardiovascular-event risk with site shifts.

Demo and test data only; the task exists for a consortium's own tables. The generated file has
the layout a user's single CSV would have (a ``hospital`` site column), and the schema below is
what ``privfed schema infer`` would draft for it after review.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SYNTHETIC_SCHEMA", "generate_table"]

SYNTHETIC_SCHEMA: dict[str, Any] = {
    "version": 1,
    "target": {"column": "cv_event", "kind": "classification", "classes": ["no", "yes"]},
    "id_column": "record_id",
    "features": {
        "age": {"type": "numeric", "min": 18, "max": 100, "missing": "reject"},
        "bmi": {"type": "numeric", "min": 12, "max": 70, "missing": "impute"},
        "systolic_bp": {"type": "numeric", "min": 70, "max": 250, "missing": "reject"},
        "hba1c": {"type": "numeric", "min": 3, "max": 16, "missing": "impute"},
        "ldl": {"type": "numeric", "min": 20, "max": 350, "missing": "reject"},
        "smoker": {
            "type": "categorical",
            "categories": ["never", "former", "current"],
            "missing": "impute",
        },
        "sex": {"type": "categorical", "categories": ["F", "M"], "missing": "reject"},
    },
}


def generate_table(hospitals: Sequence[str], *, rows_per_hospital: int, seed: int) -> pd.DataFrame:
    """Rows for every hospital; each hospital has its own age mix, scale drift and gaps."""
    frames = []
    for k, hospital in enumerate(hospitals):
        rng = np.random.default_rng([seed, 101, k])
        n = rows_per_hospital
        age_shift = rng.normal(0, 6)
        age = np.clip(rng.normal(58 + age_shift, 12, n), 18, 100)
        sex = rng.choice(["F", "M"], n)
        bmi = np.clip(rng.normal(28 + rng.normal(0, 1.5), 5, n), 12, 70)
        sbp = np.clip(rng.normal(125 + 0.4 * (age - 58), 16, n), 70, 250)
        hba1c = np.clip(rng.lognormal(np.log(5.8), 0.15, n) + 0.02 * (bmi - 28), 3, 16)
        ldl = np.clip(rng.normal(130 + rng.normal(0, 8), 35, n), 20, 350)
        smoker = rng.choice(["never", "former", "current"], n, p=rng.dirichlet([6, 3, 2]))
        risk = (
            0.06 * (age - 58)
            + 0.03 * (sbp - 125)
            + 0.5 * (hba1c - 5.8)
            + 0.01 * (ldl - 130)
            + 0.05 * (bmi - 28)
            + np.select([smoker == "current", smoker == "former"], [0.9, 0.3], 0.0)
            + 0.3 * (sex == "M")
            - 0.6
            + rng.normal(0, 0.8, n)
        )
        event = np.where(rng.random(n) < 1 / (1 + np.exp(-risk)), "yes", "no")
        frame = pd.DataFrame(
            {
                "hospital": hospital,
                "record_id": [f"{hospital}-{i:05d}" for i in range(n)],
                "age": age.round(1),
                "sex": sex,
                "bmi": bmi.round(1),
                "systolic_bp": sbp.round(0),
                "hba1c": hba1c.round(2),
                "ldl": ldl.round(0),
                "smoker": smoker,
                "cv_event": event,
            }
        )
        gaps = rng.random(n) < rng.uniform(0.0, 0.08)  # hospitals record BMI unevenly
        frame.loc[gaps, "bmi"] = np.nan
        frame.loc[rng.random(n) < 0.03, "hba1c"] = np.nan
        frame.loc[rng.random(n) < 0.02, "smoker"] = None
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
