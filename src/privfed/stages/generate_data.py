"""Stage ``generate_data``: synthetic raw tables per hospital plus a manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.io import atomic_dir, write_json
from privfed.tasks import get_task

log = logging.getLogger(__name__)


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task)
    log.info(
        "generating %s data for %d hospitals (seed %d)",
        task.name,
        cfg.base.num_hospitals,
        cfg.base.seed,
    )
    with atomic_dir(outputs["raw"]) as tmp:
        manifest = task.generate(cfg, tmp)
        write_json(manifest, tmp / "manifest.json")
    log.info("wrote %s: %s", outputs["raw"], manifest["counts"].get("patients", manifest["counts"]))
    return manifest
