"""Stage ``validate_data``: Great Expectations on every raw table; stops the pipeline on failure."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.io import write_json, write_text
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task
from privfed.validation import format_failures, render_html, run_checks

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=(
        "base",
        "generate_data.n_genes",
        "generate_data.notes",
        "model.retina.image_size",  # retina: the smallest image the model's grid accepts
        "ingest_data",
        "validate_data",
        "profiles",
    ),
    inputs={"raw": "data/raw"},
    outputs={"report": "reports/validation"},
)

REPORT_FILE = "report.json"
#: the offline report (Data Docs need Bootstrap, jQuery and Vega from CDNs)
HTML_FILE = "report.html"


class ValidationFailed(RuntimeError):
    """At least one expectation failed; the message lists each one."""


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    out = Path(outputs["report"])
    shutil.rmtree(out, ignore_errors=True)  # never leave an older, passing report behind
    checks = task.table_checks(Path(inputs["raw"]))
    outcome = run_checks(checks, out / "data_docs")
    report = {
        "success": outcome.success,
        "task": task.name,
        "failures": outcome.failures,
        "runs": outcome.results,
        "data_docs": str(outcome.docs_index.relative_to(out)),
        "html": HTML_FILE,  # self-contained: opens without the internet
    }
    write_json(report, out / REPORT_FILE)
    write_text(render_html(outcome, task=task.name), out / HTML_FILE)
    if not outcome.success:
        raise ValidationFailed(
            f"{len(outcome.failures)} expectation(s) failed (report: {out / REPORT_FILE}):\n"
            + format_failures(outcome.failures)
        )
    log.info(
        "all expectations passed (%d suite runs); report at %s (offline), Data Docs at %s",
        len(outcome.results),
        out / HTML_FILE,
        outcome.docs_index,
    )
    return report
