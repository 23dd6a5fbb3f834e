"""Synthetic multimodal longitudinal patients, one cohort per hospital.

Each patient has hidden physiological states (deterioration, inflammation, cardiac and renal
load, a genomic factor). Observations are noisy functions of these states: daily vitals, weekly
labs and markers, gene expression, demographics. The 30-day readmission risk class is drawn from
a hidden risk model over the same states plus noise, so a model can learn it only by reading the
observations, and never perfectly.

Hospitals differ (non-IID): age and severity (case mix, hence label mix), comorbidity
prevalence, measurement offsets of their devices and labs, and a gene-expression batch effect.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from privfed.tasks.readmission.schema import (
    COMORBIDITIES,
    LABELS,
    LABS,
    MEDICATIONS,
    VARIABLE_RANGES,
    VITALS,
    gene_columns,
)

__all__ = ["HospitalProfile", "hospital_profile", "generate_cohorts", "public_cohort"]

#: Share of the pooled population in Low / Medium / High (thresholds on the hidden risk).
LABEL_SHARES = (0.40, 0.35, 0.25)
_COMORBIDITY_BASE_LOGIT = {
    "diabetes": -1.2,
    "hypertension": -0.3,
    "ckd": -1.8,
    "chf": -1.8,
    "copd": -1.6,
    "cancer": -2.0,
}


@dataclass(frozen=True)
class HospitalProfile:
    """How one hospital's population and measurements differ from the others."""

    name: str
    age_mean: float
    female_share: float
    severity: float
    hr_offset: float
    sbp_offset: float
    temp_offset: float
    spo2_offset: float
    creatinine_scale: float
    glucose_scale: float
    gene_batch_sd: float


def hospital_profile(name: str, index: int, seed: int) -> HospitalProfile:
    """Draw hospital ``index``'s characteristics; deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, 1_000 + index])
    return HospitalProfile(
        name=name,
        age_mean=float(rng.uniform(52, 74)),
        female_share=float(rng.uniform(0.38, 0.62)),
        severity=float(rng.uniform(-1.0, 1.0)),
        hr_offset=float(rng.normal(0, 8)),
        sbp_offset=float(rng.normal(0, 10)),
        temp_offset=float(rng.normal(0, 0.35)),
        spo2_offset=float(rng.normal(0, 1.5)),
        creatinine_scale=float(rng.uniform(0.75, 1.35)),
        glucose_scale=float(rng.uniform(0.9, 1.15)),
        gene_batch_sd=float(rng.uniform(0.3, 0.7)),
    )


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise along the last axis (day-to-day correlated measurement noise)."""
    eps = rng.normal(0.0, sd * np.sqrt(1 - phi**2), size=shape)
    out = np.empty(shape)
    out[:, 0] = rng.normal(0.0, sd, size=shape[0])
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + eps[:, t]
    return out


def _cohort(
    profile: HospitalProfile,
    index: int,
    n: int,
    *,
    seed: int,
    min_months: int,
    max_months: int,
    n_genes: int,
    label_noise: float,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """One hospital's patients, long-format timeseries and hidden risk (before thresholds)."""
    rng = np.random.default_rng([seed, index])
    p = profile
    ids = np.array([f"{p.name}-{i:05d}" for i in range(n)])

    age = np.clip(rng.normal(p.age_mean, 13, n), 18, 95).round()
    sex = np.where(rng.random(n) < p.female_share, "F", "M")
    age_c = (age - 65) / 13
    comorb = {
        c: (rng.random(n) < 1 / (1 + np.exp(-(b + 0.6 * age_c + 0.5 * p.severity)))).astype(int)
        for c, b in _COMORBIDITY_BASE_LOGIT.items()
    }
    n_comorb = sum(comorb.values())

    # Hidden states.
    frailty = rng.normal(0.4 * p.severity + 0.3 * age_c, 1.0, n)
    deterioration = rng.normal(0.35 * p.severity + 0.25 * (n_comorb - 1.5), 1.0, n)
    inflammation = rng.normal(0.2 * p.severity, 1.0, n)
    cardiac = 0.9 * comorb["chf"] + rng.normal(0, 0.8, n)
    renal = 0.9 * comorb["ckd"] + rng.normal(0, 0.7, n)
    genomic = rng.normal(0, 1, n)

    meds = {
        "ace_inhibitor": comorb["hypertension"] | comorb["chf"],
        "beta_blocker": comorb["chf"] | (rng.random(n) < 0.1).astype(int),
        "diuretic": comorb["chf"] | comorb["ckd"],
        "statin": (rng.random(n) < 0.25 + 0.2 * comorb["diabetes"]).astype(int),
        "insulin": comorb["diabetes"] & (rng.random(n) < 0.5).astype(int),
        "anticoagulant": (rng.random(n) < 0.08 + 0.2 * comorb["chf"]).astype(int),
    }
    for m in meds:  # a few prescriptions are missing or unrelated, as in real records
        flip = rng.random(n) < 0.05
        meds[m] = np.where(flip, 1 - meds[m], meds[m]).astype(int)

    months = rng.integers(min_months, max_months + 1, n)
    n_days = months * 30
    d_max = int(n_days.max())
    day = np.arange(d_max)[None, :]
    # Ramp over each patient's last 30 days: where deterioration shows before discharge.
    ramp = np.clip((day - (n_days[:, None] - 30)) / 30, 0, 1)

    det, inf = deterioration[:, None], inflammation[:, None]
    vitals = {
        "heart_rate": 74
        + 4 * frailty[:, None]
        + 9 * det * ramp
        + 3 * inf * ramp
        + _ar1(rng, (n, d_max), 0.7, 5)
        + p.hr_offset,
        "systolic_bp": 122
        + 9 * comorb["hypertension"][:, None]
        - 6 * cardiac[:, None] * ramp
        + _ar1(rng, (n, d_max), 0.7, 7)
        + p.sbp_offset,
        "spo2": 97
        - 1.2 * comorb["copd"][:, None]
        - 1.4 * det * ramp
        + _ar1(rng, (n, d_max), 0.6, 0.8)
        + p.spo2_offset,
        "temperature": 36.8 + 0.45 * inf * ramp + _ar1(rng, (n, d_max), 0.5, 0.22) + p.temp_offset,
    }
    vitals["diastolic_bp"] = 0.55 * vitals["systolic_bp"] + 10 + rng.normal(0, 4, (n, d_max))

    n_weeks = d_max // 7
    week_day = np.arange(n_weeks) * 7 + 3
    wramp = ramp[:, week_day]

    def lognorm(center: float, signal: np.ndarray, sd: float) -> np.ndarray:
        return np.exp(np.log(center) + signal + rng.normal(0, sd, (n, n_weeks)))

    col = lambda x: x[:, None]  # noqa: E731 - tiny broadcasting helper
    labs = {
        "wbc": lognorm(7.0, 0.18 * col(inflammation) + 0.15 * col(inflammation) * wramp, 0.15),
        "hemoglobin": 13.6
        - 1.0 * col(comorb["ckd"])
        - 0.8 * col(comorb["cancer"])
        + rng.normal(0, 0.8, (n, n_weeks)),
        "platelets": lognorm(240.0, 0.05 * col(inflammation), 0.2),
        "sodium": 139 - 1.5 * col(cardiac) * wramp + rng.normal(0, 2.0, (n, n_weeks)),
        "potassium": 4.2 + 0.35 * col(renal) + rng.normal(0, 0.3, (n, n_weeks)),
        "creatinine": p.creatinine_scale
        * lognorm(0.95, 0.35 * col(renal) + 0.15 * col(deterioration) * wramp, 0.1),
        "glucose": p.glucose_scale * lognorm(100.0, 0.3 * col(comorb["diabetes"]), 0.15),
        "bun": lognorm(16.0, 0.3 * col(renal) + 0.1 * col(deterioration) * wramp, 0.2),
        "crp": lognorm(4.0, 0.6 * col(inflammation) + 0.6 * col(inflammation) * wramp, 0.4),
        "d_dimer": lognorm(0.5, 0.3 * col(inflammation) + 0.3 * col(deterioration) * wramp, 0.35),
        "troponin": lognorm(0.01, 0.6 * col(cardiac) + 0.4 * col(deterioration) * wramp, 0.45),
    }

    # Devices and assays report within a fixed range (e.g. troponin below the detection limit is
    # reported at the limit, SpO2 never above 100): clip each measurement to it.
    for measured in (vitals, labs):
        for name, values in measured.items():
            low, high = VARIABLE_RANGES[name][:2]
            measured[name] = np.clip(values, low, high)

    genes = rng.normal(0, 1, (n, n_genes))
    genes[:, :8] += 0.9 * genomic[:, None]
    genes[:, 8:12] += 0.6 * inflammation[:, None]
    genes += rng.normal(0, p.gene_batch_sd, n_genes)[None, :]  # per-site batch effect

    risk = (
        0.45 * age_c
        + 0.25 * n_comorb
        + 0.9 * deterioration
        + 0.45 * inflammation
        + 0.5 * cardiac
        + 0.35 * renal
        + 0.55 * genomic
        + 0.3 * deterioration * (cardiac > 0.5)
        - 0.25 * meds["beta_blocker"] * comorb["chf"]
        + rng.normal(0, label_noise, n)
    )

    patients = pd.DataFrame({"patient_id": ids, "hospital": p.name, "age": age, "sex": sex})
    for c in COMORBIDITIES:
        patients[f"comorbidity_{c}"] = comorb[c].astype("int64")
    for m in MEDICATIONS:
        patients[f"med_{m}"] = meds[m].astype("int64")
    patients["followup_days"] = n_days.astype("int64")
    genes_df = pd.DataFrame(genes.round(4), columns=gene_columns(n_genes))
    patients = pd.concat([patients, genes_df], axis=1)

    frames = []
    valid_day = day < n_days[:, None]
    for name in VITALS:
        rows, days = np.nonzero(valid_day)
        frames.append((rows, days, name, vitals[name][rows, days]))
    valid_week = week_day[None, :] < n_days[:, None]
    for name in LABS:
        rows, weeks = np.nonzero(valid_week)
        frames.append((rows, week_day[weeks], name, labs[name][rows, weeks]))
    ts = pd.DataFrame(
        {
            "patient_id": np.concatenate([ids[r] for r, _, _, _ in frames]),
            "hospital": p.name,
            "day": np.concatenate([d for _, d, _, _ in frames]).astype("int64"),
            "variable": np.concatenate([np.full(len(r), v) for r, _, v, _ in frames]),
            "value": np.concatenate([x for _, _, _, x in frames]).round(4),
        }
    )
    return patients, ts, risk


def generate_cohorts(
    hospitals: list[str],
    *,
    seed: int,
    patients_per_hospital: int,
    min_months: int,
    max_months: int,
    n_genes: int,
    label_noise: float,
) -> tuple[pd.DataFrame, pd.DataFrame, list[HospitalProfile]]:
    """All hospitals' patients (with labels) and timeseries, sorted and deterministic."""
    profiles = [hospital_profile(h, i, seed) for i, h in enumerate(hospitals)]
    cohorts = [
        _cohort(
            prof,
            i,
            patients_per_hospital,
            seed=seed,
            min_months=min_months,
            max_months=max_months,
            n_genes=n_genes,
            label_noise=label_noise,
        )
        for i, prof in enumerate(profiles)
    ]
    patients = pd.concat([c[0] for c in cohorts], ignore_index=True)
    risk = np.concatenate([c[2] for c in cohorts])
    cuts = np.quantile(risk, np.cumsum(LABEL_SHARES)[:-1])
    patients.insert(
        len(patients.columns), "readmission_risk", np.array(LABELS)[np.searchsorted(cuts, risk)]
    )
    ts = pd.concat([c[1] for c in cohorts], ignore_index=True)
    ts = ts.sort_values(["patient_id", "variable", "day"], kind="stable", ignore_index=True)
    return patients, ts, profiles


def profiles_as_dicts(profiles: list[HospitalProfile]) -> list[dict[str, float | str]]:
    return [asdict(p) for p in profiles]


#: Seed of the public cohort: public, the same for every consortium, never ``base.seed``.
PUBLIC_SEED = 20_250_301
#: The public registry's own label definition: its shares of Low / Medium / High.
PUBLIC_LABEL_SHARES = (0.55, 0.30, 0.15)
#: Noise of the public registry's hidden risk (outcomes coded from claims, not chart review).
PUBLIC_LABEL_NOISE = 1.05
#: Follow-up months of the public registry's patients.
PUBLIC_MONTHS = (6, 12)


def public_profile() -> HospitalProfile:
    """The public registry's population and devices, drawn from :data:`PUBLIC_SEED` alone.

    A general-population registry, not a hospital of the consortium: younger and healthier
    (age and severity outside the hospitals' ranges), with devices and assays calibrated
    otherwise (offsets and scales drawn wider than any hospital's).
    """
    rng = np.random.default_rng([PUBLIC_SEED, 7])
    return HospitalProfile(
        name="public",
        age_mean=float(rng.uniform(44, 50)),
        female_share=float(rng.uniform(0.5, 0.6)),
        severity=float(rng.uniform(-1.6, -1.2)),
        hr_offset=float(rng.choice([-1, 1]) * rng.uniform(8, 14)),
        sbp_offset=float(rng.choice([-1, 1]) * rng.uniform(10, 16)),
        temp_offset=float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.5)),
        spo2_offset=float(rng.choice([-1, 1]) * rng.uniform(1.5, 2.5)),
        creatinine_scale=float(rng.uniform(1.35, 1.5)),
        glucose_scale=float(rng.uniform(1.15, 1.25)),
        gene_batch_sd=0.0,
    )


def public_cohort(n: int, *, n_genes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A public registry's patients and timeseries, in the hospitals' raw layout.

    It differs from the consortium the way real public data does: another population and
    other devices (:func:`public_profile`), no genomics (registries rarely sequence: every
    gene value is the reference 0), noisier outcome coding (:data:`PUBLIC_LABEL_NOISE`) and
    its own label definition (:data:`PUBLIC_LABEL_SHARES`, cut on its own risk distribution).
    Only the layout (``n_genes`` columns) is the consortium's; no hospital setting is read.
    """
    patients, ts, risk = _cohort(
        public_profile(),
        10_000,
        n,
        seed=PUBLIC_SEED,
        min_months=PUBLIC_MONTHS[0],
        max_months=PUBLIC_MONTHS[1],
        n_genes=n_genes,
        label_noise=PUBLIC_LABEL_NOISE,
    )
    patients[gene_columns(n_genes)] = 0.0
    cuts = np.quantile(risk, np.cumsum(PUBLIC_LABEL_SHARES)[:-1])
    patients["readmission_risk"] = np.array(LABELS)[np.searchsorted(cuts, risk)]
    return patients, ts
