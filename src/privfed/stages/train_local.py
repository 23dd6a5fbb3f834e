"""Stage ``train_local``: one model per hospital on its own data (the no-collaboration floor)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import PrivFedConfig
from privfed.io import atomic_dir, write_json
from privfed.partitions import hospital_dirs
from privfed.selection import fit_selected
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=(
        "base",
        "generate_data.n_genes",
        "ingest_data",
        "model",
        "train",
        "train_local",
        "profiles",
    ),
    inputs={"partitions": "data/partitions"},
    outputs={"models": "models/local", "metrics": "metrics/train_local.json"},
)


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    metrics: dict[str, Any] = {}
    with atomic_dir(outputs["models"]) as tmp:
        for hospital_dir in hospital_dirs(Path(inputs["partitions"])):
            hospital = hospital_dir.name
            train = task.load_dataset([hospital_dir / "train"])
            val = task.load_dataset([hospital_dir / "val"])
            torch.manual_seed(cfg.base.seed)  # the same initialization as the centralized model
            # the hospital's own statistics: a local-only model never sees anyone else's
            model = task.initial_model(task.local_statistics([hospital_dir / "train"]))
            result, kept = fit_selected(
                task,
                model,
                train,
                val,
                cfg,
                epochs=task.baseline_epochs(cfg.train_local.epochs),
                seed=cfg.base.seed,
                label=f"local {hospital}",
            )
            metrics[hospital] = {
                "train_loss": result.train_loss,
                **result.losses,  # a GAN: generator and discriminator losses
                "num_examples": result.num_examples,
                "selection": kept.record(),
                "val": task.evaluate(model, val),
            }
            save_model(
                tmp / hospital / MODEL_FILE,
                model.state_dict(),
                task=task.name,
                meta={"kind": "local", "hospital": hospital, "epoch": kept.epoch},
            )
            log.info(
                "local %s: kept epoch %s, val %s=%.4f",
                hospital,
                kept.epoch,
                task.primary_metric,
                metrics[hospital]["val"][task.primary_metric],
            )
    write_json(metrics, outputs["metrics"])
    return metrics
