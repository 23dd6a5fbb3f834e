"""Example "own data" for the bring-your-own-data walkthrough: real records, three sites.

scikit-learn ships the Wisconsin diagnostic breast-cancer table (569 tumours, 30 numeric
features). Nothing is downloaded. We deal its rows to three sites with different case mixes
(a referral centre sees more malignant tumours), the way a consortium's hospitals differ, and
write one CSV with a ``site`` column: the layout a user's own export would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SITES", "breast_cancer_sites"]

#: Site -> (share of malignant tumours, share of benign ones) dealt to it.
SITES = {"site_a": (0.55, 0.30), "site_b": (0.30, 0.40), "site_c": (0.15, 0.30)}


def breast_cancer_sites(seed: int = 0) -> pd.DataFrame:
    """The table with a ``site`` column first and a ``diagnosis`` target (malignant/benign)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"])
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    malignant = data.target.to_numpy() == 0  # sklearn codes malignant as 0
    frame["diagnosis"] = np.where(malignant, "malignant", "benign")
    rng = np.random.default_rng(seed)
    names = list(SITES)
    p_malignant = np.array([m for m, _ in SITES.values()])
    p_benign = np.array([b for _, b in SITES.values()])
    site = [rng.choice(names, p=p_malignant if m else p_benign) for m in malignant]
    frame.insert(0, "site", site)
    return frame


def write_breast_cancer_sites(out: Path, seed: int = 0) -> pd.DataFrame:
    frame = breast_cancer_sites(seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return frame
