"""Stage ``ingest_data``: every dataset enters here, synthetic or a consortium's own.

``base.data_source: synthetic`` reads what ``generate_data`` wrote; ``directory`` reads
``ingest_data.path`` in place (one folder per hospital, or one file with a site column). The
task writes the raw layout that validation checks, so the synthetic path exercises the same
reader a user's data goes through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.io import DataError, atomic_dir, read_json, write_json
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task
from privfed.tasks.base import Task

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base", "ingest_data", "profiles"),
    inputs={"generated": "data/generated"},
    outputs={"raw": "data/raw"},
)


def source_of(cfg: PrivFedConfig, generated: Path, task: Task) -> tuple[Path, str]:
    """The folder or file to read, and the column naming each row's hospital."""
    if cfg.base.data_source == "synthetic":
        manifest = read_json(generated / "manifest.json")
        if "skipped" in manifest:
            raise DataError(f"{generated} holds no synthetic data: {manifest['skipped']}")
        return generated, str(manifest["site_column"])
    source = Path(cfg.ingest_data.path)
    if not source.exists():
        raise DataError(
            f"ingest_data.path={cfg.ingest_data.path!r} does not exist "
            f"(base.data_source is 'directory'; working directory {Path.cwd()})"
        )
    return source, task.site_column(cfg.ingest_data.site_column)


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    source, site_column = source_of(cfg, Path(inputs["generated"]), task)
    log.info("ingesting %s data from %s (site column %r)", task.name, source, site_column)
    with atomic_dir(outputs["raw"]) as tmp:
        manifest = task.ingest(source, tmp, site_column=site_column)
        manifest |= {"data_source": cfg.base.data_source, "source": str(source)}
        write_json(manifest, tmp / "manifest.json")
    log.info("ingested %d hospitals: %s", len(manifest["hospitals"]), manifest["counts"])
    return manifest
