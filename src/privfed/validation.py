"""Run a task's Great Expectations checks and turn the results into a readable report.

An ephemeral GX context keeps nothing on disk except the Data Docs site, which is built into the
folder we choose (``reports/validation/data_docs``).
"""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from privfed.tasks.base import TableCheck  # noqa: E402

__all__ = ["ValidationOutcome", "run_checks", "format_failures"]

_SITE = "privfed_site"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    failures: list[dict[str, Any]]
    results: list[dict[str, Any]]
    docs_index: Path


def _context(docs_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            _SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=cfg)


def _failures(table: str, group: str | None, result: Any) -> list[dict[str, Any]]:
    out = []
    for r in result.results:
        if r.success:
            continue
        j = r.to_json_dict()
        kwargs = j["expectation_config"]["kwargs"]
        res = j.get("result") or {}
        out.append(
            {
                "table": table,
                "group": group,
                "expectation": j["expectation_config"]["type"],
                "column": kwargs.get("column")
                or kwargs.get("column_list")
                or kwargs.get("column_set"),
                "observed_value": res.get("observed_value"),
                "unexpected_count": res.get("unexpected_count"),
                "partial_unexpected_list": res.get("partial_unexpected_list"),
                "exception": (j.get("exception_info") or {}).get("exception_message"),
            }
        )
    return out


def _run_suite(context: Any, name: str, expectations: list[Any], frames: dict[str, Any]) -> list:
    """Validate each (run name -> DataFrame) against one suite; results are kept for Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_validation", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{name}_checkpoint",
            validation_definitions=[definition],
            actions=[],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
        )
    )
    results = []
    for run_name, frame in frames.items():
        run = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
        )
        (result,) = run.run_results.values()
        results.append((run_name, result))
    return results


def run_checks(checks: list[TableCheck], docs_dir: Path) -> ValidationOutcome:
    """Validate every table (and every group of grouped checks); build Data Docs."""
    context = _context(docs_dir)
    failures: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for check in checks:
        runs = _run_suite(context, check.name, list(check.expectations), {check.name: check.frame})
        if check.group_column and check.per_group:
            groups = {
                f"{check.name}[{check.group_column}={value}]": frame
                for value, frame in check.frame.groupby(check.group_column, sort=True)
            }
            runs += _run_suite(context, f"{check.name}_per_group", list(check.per_group), groups)
        for run_name, result in runs:
            group = run_name if run_name != check.name else None
            failures += _failures(check.name, group, result)
            summaries.append(
                {
                    "table": check.name,
                    "run": run_name,
                    "success": bool(result.success),
                    "statistics": result.to_json_dict().get("statistics"),
                }
            )
    context.build_data_docs(site_names=[_SITE])
    return ValidationOutcome(
        success=not failures,
        failures=failures,
        results=summaries,
        docs_index=docs_dir / "index.html",
    )


def format_failures(failures: list[dict[str, Any]]) -> str:
    """One line per failed expectation: table, expectation, column, what was observed."""
    lines = []
    for f in failures:
        where = f["table"] + (f" {f['group']}" if f["group"] else "")
        observed = f["observed_value"]
        if observed is None and f["unexpected_count"]:
            # GX's sample repeats values ('0', '0', '1', …): the distinct ones say what is wrong
            values = sorted({str(v) for v in f["partial_unexpected_list"] or []})
            observed = f"{f['unexpected_count']} unexpected row(s), e.g. value(s) {values}"
        if f["exception"]:
            observed = f"error: {f['exception']}"
        lines.append(f"  - {where}: {f['expectation']} on {f['column']!s}: observed {observed}")
    return "\n".join(lines)
