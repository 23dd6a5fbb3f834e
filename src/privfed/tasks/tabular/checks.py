"""Great Expectations suite derived from a user's tabular schema."""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations.expectations as gxe
import pandas as pd

from privfed.tasks.base import TableCheck
from privfed.tasks.tabular.schema import CategoricalFeature, NumericFeature, TabularSchema

__all__ = ["table_checks"]


def _table_expectations(schema: TabularSchema, hospitals: Sequence[str]) -> list:
    """What holds for the whole table: its columns, unique ids, the hospitals ingested."""
    target = schema.target.column
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=["unit_id", "hospital", *schema.features, target], exact_match=True
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="unit_id"),
        gxe.ExpectColumnValuesToBeUnique(column="unit_id"),
        gxe.ExpectColumnDistinctValuesToEqualSet(column="hospital", value_set=list(hospitals)),
    ]


def _value_expectations(schema: TabularSchema, min_rows: int) -> list:
    """What each hospital's rows must hold, run per hospital so a failure names the site."""
    target = schema.target.column
    exps = [
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectColumnValuesToNotBeNull(column=target),
    ]
    if schema.is_classification:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=target, value_set=schema.target.classes))
    else:
        exps.append(gxe.ExpectColumnValuesToBeOfType(column=target, type_="float64"))
    for name, feature in schema.features.items():
        if feature.missing == "reject":
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if isinstance(feature, NumericFeature):
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=name, type_="float64"))
            if feature.min is not None or feature.max is not None:
                exps.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name, min_value=feature.min, max_value=feature.max
                    )
                )
        elif isinstance(feature, CategoricalFeature):
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=feature.categories))
    return exps


def table_checks(
    schema: TabularSchema, table: pd.DataFrame, *, hospitals: Sequence[str], min_rows: int
) -> list[TableCheck]:
    return [
        TableCheck(
            name="table",
            frame=table,
            expectations=_table_expectations(schema, hospitals),
            group_column="hospital",
            per_group=_value_expectations(schema, min_rows),
        )
    ]
