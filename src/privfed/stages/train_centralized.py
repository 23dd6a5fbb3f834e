"""Stage ``train_centralized``: the pooled-data baseline (what federation tries to match)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import PrivFedConfig
from privfed.io import atomic_dir, write_json
from privfed.partitions import hospital_dirs, split_dirs
from privfed.selection import fit_selected
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task
from privfed.tasks.base import Task
from privfed.training import resolve_device

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


#: Folder (under the model output) of each extra seed's model (``train_centralized.seeds``).
SEED_DIR = "seed_{seed}"


def seeds(cfg: PrivFedConfig) -> list[int]:
    """The centralized baseline's training seeds: ``base.seed`` first, then the extra ones."""
    return [cfg.base.seed + i for i in range(cfg.train_centralized.seeds)]


def _train_one(
    cfg: PrivFedConfig, task: Task, hospitals: list[Path], train: Any, val: Any, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """One pooled-data model, seeded (its initialization, data order and augmentation), with
    the epoch ``train.selection`` keeps."""
    torch.manual_seed(seed)
    # pooled data: its statistics are computed directly (the federation sums the same ones)
    model = task.initial_model(task.local_statistics(split_dirs(hospitals, "train")))
    result, kept = fit_selected(
        task,
        model,
        train,
        val,
        cfg,
        epochs=task.baseline_epochs(cfg.train_centralized.epochs),
        seed=seed,
        label=f"centralized seed {seed}",
    )
    metrics = {
        "seed": seed,
        "train_loss": result.train_loss,
        **result.losses,  # a GAN: generator and discriminator losses
        "num_examples": result.num_examples,
        "selection": kept.record(),
        "val": task.evaluate(model, val),
    }
    log.info(
        "centralized seed %d: kept epoch %s, val %s=%.4f",
        seed,
        kept.epoch,
        task.primary_metric,
        metrics["val"][task.primary_metric],
    )
    return model, metrics


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    hospitals = hospital_dirs(Path(inputs["partitions"]))
    train = task.load_dataset(split_dirs(hospitals, "train"))
    val = task.load_dataset(split_dirs(hospitals, "val"))
    device = resolve_device(cfg.base.device)
    log.info(
        "centralized: %d training examples from %d hospitals on %s, seeds %s",
        len(train),
        len(hospitals),
        device,
        seeds(cfg),
    )
    runs = []
    with atomic_dir(outputs["model"]) as tmp:
        for i, seed in enumerate(seeds(cfg)):
            model, metrics = _train_one(cfg, task, hospitals, train, val, seed)
            folder = tmp if i == 0 else tmp / SEED_DIR.format(seed=seed)
            save_model(
                folder / MODEL_FILE,
                model.state_dict(),
                task=task.name,
                meta={"kind": "centralized", "seed": seed, "epoch": metrics["selection"]["epoch"]},
            )
            runs.append(metrics)
    # the base seed's model is the baseline's model; the others measure its spread
    metrics = {**runs[0], "device": str(device), "seeds": runs}
    write_json(metrics, outputs["metrics"])
    return metrics
