"""The public readmission model: pretrained on a public registry, never on a hospital's data.

:func:`privfed.tasks.readmission.generate.public_cohort` is that registry (its own seed,
population, devices and label definition, and no genomics). The model is trained on it without
DP (public data costs no privacy), keeping the epoch with the best public validation AUROC, and
cached by :func:`privfed.public.cached_build`, so the ServerApp, every SuperNode and every stage
start from the same weights.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Subset

from privfed.public import (
    PublicModel,
    built_public_model,
    one_thread_seeded,
    pretrain_best,
    write_public_model,
)

if TYPE_CHECKING:
    from privfed.tasks.base import Task

__all__ = ["PublicModel", "public_model"]

log = logging.getLogger(__name__)

#: Share of the public cohort held out to pick the pretraining epoch.
VAL_SHARE = 0.1
BATCH_SIZE = 64
LR = 3e-3


def _settings(cfg: Any) -> dict[str, Any]:
    """What the public build depends on: the architecture, the input layout, its own size."""
    m = cfg.model
    return {
        "seq_days": m.seq_days,
        "seq_weeks": m.seq_weeks,
        "hidden": m.hidden,
        "dropout": m.dropout,
        "n_genes": cfg.generate_data.n_genes,
        "public_patients": m.public_patients,
        "public_epochs": m.public_epochs,
    }


def _build(settings: dict[str, Any], task: Task, folder: Path) -> None:
    """Pretrain on the public cohort; write the best public-validation epoch's weights."""
    from privfed.tasks.readmission.features import featurize, to_dataset
    from privfed.tasks.readmission.generate import PUBLIC_SEED, public_cohort

    patients, ts = public_cohort(settings["public_patients"], n_genes=settings["n_genes"])
    dataset = to_dataset(
        featurize(patients, ts, seq_days=settings["seq_days"], seq_weeks=settings["seq_weeks"])
    )
    n_val = max(1, int(len(dataset) * VAL_SHARE))
    with one_thread_seeded(PUBLIC_SEED):
        order = torch.randperm(len(dataset)).tolist()
        train, val = Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])
        best = pretrain_best(
            task,
            task.build_model(),
            train,
            val,
            epochs=settings["public_epochs"],
            lr=LR,
            batch_size=BATCH_SIZE,
            label="public readmission model",
        )
    write_public_model(
        folder,
        best,
        {"settings": settings, "patients": len(dataset), "public_val_macro_auroc": best.score},
    )


def public_model(task: Task) -> PublicModel:
    """The public model for the task's architecture (``task.cfg``), built once per cache."""
    from privfed.tasks.readmission import features, generate

    settings = _settings(task.cfg)
    modules = (generate, features, inspect.getmodule(_build))
    build = functools.partial(_build, settings, task)
    return built_public_model("readmission-public", settings, modules, build)  # type: ignore[arg-type]
