"""Run a task's Great Expectations checks and turn the results into a readable report.

An ephemeral GX context keeps nothing on disk except the Data Docs site, which is built into the
folder we choose (``reports/validation/data_docs``).
"""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from dataclasses import dataclass, field  # noqa: E402
from html import escape  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from privfed.tasks.base import TableCheck  # noqa: E402

__all__ = ["ValidationOutcome", "format_failures", "render_html", "run_checks"]

_SITE = "privfed_site"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    failures: list[dict[str, Any]]
    results: list[dict[str, Any]]
    docs_index: Path
    #: one row per expectation per suite run (what :func:`render_html` shows)
    expectations: list[dict[str, Any]] = field(default_factory=list)


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


def _described(table: str, run_name: str, result: Any) -> list[dict[str, Any]]:
    """Every expectation of one suite run: what it checked, on what, and GX's result."""
    rows = []
    for r in result.results:
        j = r.to_json_dict()
        kwargs = j["expectation_config"]["kwargs"]
        rows.append(
            {
                "table": table,
                "run": run_name,
                "expectation": j["expectation_config"]["type"],
                "column": kwargs.get("column")
                or kwargs.get("column_list")
                or kwargs.get("column_set"),
                "success": bool(r.success),
                "result": j.get("result") or {},
                "exception": (j.get("exception_info") or {}).get("exception_message"),
                "raised": bool((j.get("exception_info") or {}).get("raised_exception")),
            }
        )
    return rows


def _failures(table: str, group: str | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "table": table,
            "group": group,
            "expectation": row["expectation"],
            "column": row["column"],
            "observed_value": row["result"].get("observed_value"),
            "unexpected_count": row["result"].get("unexpected_count"),
            "partial_unexpected_list": row["result"].get("partial_unexpected_list"),
            "exception": row["exception"],
        }
        for row in rows
        if not row["success"]
    ]


def _expectation_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the HTML report shows of each expectation: pass or fail and what was observed."""
    out = []
    for row in rows:
        observed = row["result"].get("observed_value")
        if observed is None and row["result"].get("unexpected_count") is not None:
            observed = f"{row['result']['unexpected_count']} unexpected row(s)"
        if row["raised"]:
            observed = f"error: {row['exception']}"
        out.append(
            {k: row[k] for k in ("table", "run", "expectation", "column", "success")}
            | {"observed": observed}
        )
    return out


def _run_suite(context: Any, name: str, expectations: list[Any], frames: dict[str, Any]) -> list:
    """Validate each (run name -> DataFrame) against one suite; results are kept for Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    # filled before the store holds it: a stored suite re-serializes itself on every
    # add_expectation (readmission's 169 expectations: 4 s of validate_data's CPU)
    suite = gx.ExpectationSuite(name=f"{name}_suite")
    for expectation in expectations:
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
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
    expectations: list[dict[str, Any]] = []
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
            rows = _described(check.name, run_name, result)
            failures += _failures(check.name, group, rows)
            expectations += _expectation_rows(rows)
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
        expectations=expectations,
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.failed td { background: #fde2e2; }
.pass { color: #176f2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
"""


def render_html(outcome: ValidationOutcome, *, task: str) -> str:
    """A self-contained validation report: inline style, no script, nothing fetched.

    Great Expectations' Data Docs load Bootstrap, jQuery and Vega from CDNs and show empty
    tables without them; this page reads the same results and opens offline.
    """
    verdict = (
        '<span class="pass">passed</span>'
        if outcome.success
        else '<span class="fail">FAILED</span>'
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>PrivFed validation: {escape(task)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Data validation ({escape(task)}): {verdict}</h1>",
        f"<p>{len(outcome.results)} suite run(s), {len(outcome.expectations)} expectation "
        f"result(s), {len(outcome.failures)} failed. Failed expectations show sample values, "
        "which for the id checks are patient ids: treat this page as patient data.</p>",
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in outcome.expectations:
        runs.setdefault(row["run"], []).append(row)
    for run, rows in runs.items():
        failed = sum(not r["success"] for r in rows)
        parts.append(f"<h2>{escape(run)}: {len(rows) - failed}/{len(rows)} passed</h2>")
        parts.append("<table><tr><th>expectation</th><th>column</th><th>result</th>")
        parts.append("<th>observed</th></tr>")
        for r in rows:
            mark = (
                '<span class="pass">pass</span>'
                if r["success"]
                else '<span class="fail">fail</span>'
            )
            parts.append(
                f"<tr class='{'passed' if r['success'] else 'failed'}'>"
                f"<td>{escape(r['expectation'])}</td><td>{escape(str(r['column'] or ''))}</td>"
                f"<td>{mark}</td><td>{escape(_short(r['observed']))}</td></tr>"
            )
        parts.append("</table>")
    for failure in outcome.failures:  # the sample values of each failure, as the log shows
        parts.append(f"<pre>{escape(format_failures([failure]))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _short(value: Any, limit: int = 200) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
