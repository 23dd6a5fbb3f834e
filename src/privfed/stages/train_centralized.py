"""Stage ``train_centralized``: the pooled-data baseline (what federation tries to match)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import PrivFedConfig
from privfed.io import write_json
from privfed.partitions import hospital_dirs, split_dirs
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task
from privfed.training import resolve_device, train_with_config

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=(
        "base",
        "generate_data.n_genes",
        "ingest_data",
        "model",
        "train",
        "train_centralized",
        "profiles",
    ),
    inputs={"partitions": "data/partitions"},
    outputs={"model": "models/centralized", "metrics": "metrics/train_centralized.json"},
)


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    partitions = Path(inputs["partitions"])
    hospitals = hospital_dirs(partitions)
    train = task.load_dataset(split_dirs(hospitals, "train"))
    val = task.load_dataset(split_dirs(hospitals, "val"))
    device = resolve_device(cfg.base.device)
    # pooled data: its statistics are computed directly (the federation sums the same ones)
    model = task.initial_model(task.local_statistics(split_dirs(hospitals, "train")))
    log.info(
        "centralized: %d training examples from %d hospitals on %s",
        len(train),
        len(hospitals),
        device,
    )
    result = train_with_config(
        task,
        model,
        train,
        cfg,
        epochs=task.baseline_epochs(cfg.train_centralized.epochs),
        seed=cfg.base.seed,
        label="centralized",
    )
    metrics = {
        "train_loss": result.train_loss,
        "num_examples": result.num_examples,
        "val": task.evaluate(model, val),
        "device": str(device),
    }
    save_model(
        Path(outputs["model"]) / MODEL_FILE,
        model.state_dict(),
        task=task.name,
        meta={"kind": "centralized"},
    )
    write_json(metrics, outputs["metrics"])
    log.info("centralized val %s=%.4f", task.primary_metric, metrics["val"][task.primary_metric])
    return metrics
