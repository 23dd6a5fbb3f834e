"""Great Expectations suites for the readmission tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from privfed.tasks.base import TableCheck
from privfed.tasks.readmission.schema import (
    COMORBIDITIES,
    LABELS,
    MEDICATIONS,
    PATIENT_COLUMNS,
    TIMESERIES_COLUMNS,
    VARIABLE_RANGES,
    VARIABLES,
    gene_columns,
)

if TYPE_CHECKING:
    from privfed.config import PrivFedConfig

__all__ = ["table_checks"]


def _patient_expectations(hospitals: list[str], n_genes: int) -> list:
    genes = gene_columns(n_genes)
    binary = [f"comorbidity_{c}" for c in COMORBIDITIES] + [f"med_{m}" for m in MEDICATIONS]
    exps = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(PATIENT_COLUMNS) + genes, exact_match=True
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="patient_id"),
        gxe.ExpectColumnValuesToBeUnique(column="patient_id"),
        gxe.ExpectColumnValuesToBeOfType(column="patient_id", type_="str"),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=hospitals),
        gxe.ExpectColumnValuesToBeOfType(column="age", type_="float64"),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=120),
        gxe.ExpectColumnValuesToBeInSet(column="sex", value_set=["F", "M"]),
        gxe.ExpectColumnValuesToBeBetween(column="followup_days", min_value=28, max_value=800),
        gxe.ExpectColumnValuesToNotBeNull(column="readmission_risk"),
        gxe.ExpectColumnValuesToBeInSet(column="readmission_risk", value_set=list(LABELS)),
    ]
    for column in binary:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[0, 1]))
    for column in ["age", "sex", "followup_days", *binary, *genes]:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for column in genes:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-12, max_value=12))
    return exps


def _timeseries_expectations(hospitals: list[str], patient_ids: list[str]) -> list:
    exps = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*TIMESERIES_COLUMNS, "day_step"], exact_match=True
        ),
        gxe.ExpectColumnValuesToBeInSet(column="variable", value_set=list(VARIABLES)),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=hospitals),
        gxe.ExpectColumnValuesToBeInSet(column="patient_id", value_set=patient_ids),
        gxe.ExpectColumnValuesToBeOfType(column="day", type_="int64"),
        gxe.ExpectColumnValuesToBeBetween(column="day", min_value=0, max_value=800),
        gxe.ExpectColumnValuesToBeOfType(column="value", type_="float64"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["patient_id", "variable", "day"]),
        # Ordering: within each (patient, variable) the day strictly increases row by row.
        gxe.ExpectColumnValuesToBeBetween(column="day_step", min_value=1),
    ]
    for column in TIMESERIES_COLUMNS:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for variable, (low, high, *_rest) in VARIABLE_RANGES.items():
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="value",
                min_value=low,
                max_value=high,
                row_condition=Column("variable") == variable,
            )
        )
    return exps


def _with_day_step(ts: pd.DataFrame) -> pd.DataFrame:
    """Add the row-to-row day difference within each (patient, variable), in file order."""
    out = ts.copy()
    out["day_step"] = out.groupby(["patient_id", "variable"], sort=False)["day"].diff()
    return out


def table_checks(
    cfg: PrivFedConfig,
    patients: pd.DataFrame,
    ts: pd.DataFrame,
    *,
    n_genes: int,
    hospitals: list[str],
) -> list[TableCheck]:
    v = cfg.validate_data
    per_hospital = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=v.min_patients_per_hospital, max_value=v.max_patients_per_hospital
        )
    ]
    return [
        TableCheck(
            name="patients",
            frame=patients,
            expectations=_patient_expectations(hospitals, n_genes),
            group_column="hospital",
            per_group=per_hospital,
        ),
        TableCheck(
            name="timeseries",
            frame=_with_day_step(ts),
            expectations=_timeseries_expectations(hospitals, patients["patient_id"].tolist()),
        ),
    ]
