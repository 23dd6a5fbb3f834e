"""Stage ``generate_data``: synthetic per-hospital data in the layout ``ingest_data`` reads.

With ``base.data_source: directory`` there is nothing to generate: the stage writes only a
manifest that says so, and ``ingest_data`` reads the user's folders instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.io import atomic_dir, write_json
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base", "generate_data", "profiles"),
    outputs={"generated": "data/generated"},
)


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    with atomic_dir(outputs["generated"]) as tmp:
        if cfg.base.data_source != "synthetic":
            manifest = {"task": task.name, "skipped": "base.data_source is not 'synthetic'"}
            log.info("base.data_source=%s: no synthetic data generated", cfg.base.data_source)
        else:
            log.info(
                "generating %s data for %d hospitals (seed %d)",
                task.name,
                cfg.base.num_hospitals,
                cfg.base.seed,
            )
            manifest = task.generate(tmp)
            log.info("wrote %s: %s", outputs["generated"], manifest["counts"])
        write_json(manifest, tmp / "manifest.json")
    return manifest
