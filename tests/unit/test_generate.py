from __future__ import annotations

import numpy as np
import pandas as pd

from privfed.tasks.readmission.generate import generate_cohorts
from privfed.tasks.readmission.schema import LABELS, VARIABLES


def _cohorts(seed: int, n: int = 150):
    return generate_cohorts(
        ["a", "b", "c"],
        seed=seed,
        patients_per_hospital=n,
        min_months=6,
        max_months=7,
        n_genes=50,
        label_noise=0.35,
    )


def test_same_seed_same_data_other_seed_other_data() -> None:
    p1, ts1, _ = _cohorts(3)
    p2, ts2, _ = _cohorts(3)
    p3, _, _ = _cohorts(4)
    pd.testing.assert_frame_equal(p1, p2)
    pd.testing.assert_frame_equal(ts1, ts2)
    assert not p1["age"].equals(p3["age"])


def test_shapes_labels_and_modalities() -> None:
    patients, ts, _ = _cohorts(5)
    assert len(patients) == 450
    assert set(patients["readmission_risk"]) == set(LABELS)
    assert set(ts["variable"]) == set(VARIABLES)
    assert len([c for c in patients.columns if c.startswith("gene_")]) == 50
    # daily vitals: one heart-rate row per day of follow-up for every patient
    hr = ts[ts["variable"] == "heart_rate"].groupby("patient_id").size()
    assert (hr.loc[patients["patient_id"]].to_numpy() == patients["followup_days"].to_numpy()).all()
    # weekly labs, drawn on day 3 of each week: days 3, 10, 17, ... < followup_days
    crp = ts[ts["variable"] == "crp"].groupby("patient_id").size()
    weeks = (patients["followup_days"] - 4) // 7 + 1
    assert (crp.loc[patients["patient_id"]].to_numpy() == weeks.to_numpy()).all()


def test_hospitals_are_not_iid() -> None:
    patients, ts, profiles = _cohorts(7, n=400)
    label_mix = pd.crosstab(patients["hospital"], patients["readmission_risk"], normalize="index")
    # label mix differs between hospitals by more than sampling noise
    assert (label_mix.max() - label_mix.min()).max() > 0.08
    ages = patients.groupby("hospital")["age"].mean()
    assert ages.max() - ages.min() > 3
    # device offsets: heart rate means differ per hospital
    hr = ts[ts["variable"] == "heart_rate"].groupby("hospital")["value"].mean()
    offsets = np.array([p.hr_offset for p in profiles])
    assert np.corrcoef(hr.to_numpy(), offsets)[0, 1] > 0.5


def test_label_is_learnable_from_observations() -> None:
    """The hidden risk shows in observables: high-risk patients have higher troponin/CRP."""
    patients, ts, _ = _cohorts(9, n=300)
    last = ts[ts["variable"] == "crp"].groupby("patient_id")["value"].last()
    crp = patients.set_index("patient_id")["readmission_risk"].to_frame().join(last)
    means = crp.groupby("readmission_risk")["value"].median()
    assert means["High"] > means["Low"]


def test_measurements_stay_within_reportable_ranges() -> None:
    """Validation ranges are the assays' reportable ranges: generated data must never break them."""
    from privfed.tasks.readmission.schema import VARIABLE_RANGES

    _, ts, _ = generate_cohorts(
        ["a", "b", "c", "d"],
        seed=42,
        patients_per_hospital=600,
        min_months=6,
        max_months=12,
        n_genes=50,
        label_noise=0.35,
    )
    bounds = ts.groupby("variable")["value"].agg(["min", "max"])
    for variable, (low, high, *_) in VARIABLE_RANGES.items():
        assert bounds.loc[variable, "min"] >= low, variable
        assert bounds.loc[variable, "max"] <= high, variable
