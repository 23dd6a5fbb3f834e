"""Column and variable vocabulary of the readmission data (generator, checks, features)."""

from __future__ import annotations

SCHEMA_VERSION = "1.0"

LABELS = ("Low", "Medium", "High")

VITALS = ("heart_rate", "systolic_bp", "diastolic_bp", "spo2", "temperature")
CBC = ("wbc", "hemoglobin", "platelets")
METABOLIC = ("sodium", "potassium", "creatinine", "glucose", "bun")
MARKERS = ("crp", "d_dimer", "troponin")
LABS = CBC + METABOLIC + MARKERS
VARIABLES = VITALS + LABS

COMORBIDITIES = ("diabetes", "hypertension", "ckd", "chf", "copd", "cancer")
MEDICATIONS = ("ace_inhibitor", "beta_blocker", "diuretic", "statin", "insulin", "anticoagulant")

#: Plausible physical ranges (checked by validation) and reference scaling (used by features).
#: name: (min, max, reference mean, reference sd, log-transform)
VARIABLE_RANGES: dict[str, tuple[float, float, float, float, bool]] = {
    "heart_rate": (20.0, 250.0, 80.0, 15.0, False),
    "systolic_bp": (50.0, 260.0, 128.0, 18.0, False),
    "diastolic_bp": (25.0, 160.0, 78.0, 11.0, False),
    "spo2": (50.0, 100.0, 96.0, 2.5, False),
    "temperature": (32.0, 43.0, 36.9, 0.5, False),
    "wbc": (0.5, 60.0, 1.9, 0.35, True),
    "hemoglobin": (3.0, 22.0, 13.0, 1.8, False),
    "platelets": (10.0, 1200.0, 5.45, 0.35, True),
    "sodium": (110.0, 170.0, 139.0, 3.5, False),
    "potassium": (2.0, 8.0, 4.3, 0.5, False),
    "creatinine": (0.2, 15.0, 0.1, 0.45, True),
    "glucose": (30.0, 800.0, 4.8, 0.3, True),
    "bun": (2.0, 150.0, 2.9, 0.45, True),
    "crp": (0.01, 500.0, 1.5, 1.2, True),
    "d_dimer": (0.01, 50.0, -0.5, 0.8, True),
    "troponin": (0.0005, 50.0, -4.0, 1.2, True),
}

PATIENT_COLUMNS = (
    ["patient_id", "hospital", "age", "sex"]
    + [f"comorbidity_{c}" for c in COMORBIDITIES]
    + [f"med_{m}" for m in MEDICATIONS]
    + ["followup_days", "readmission_risk"]
)
TIMESERIES_COLUMNS = ("patient_id", "hospital", "day", "variable", "value")


def gene_columns(n_genes: int) -> list[str]:
    return [f"gene_{i:03d}" for i in range(n_genes)]
