"""The public segmentation model: a UNet pretrained on a public scan archive, never a hospital's.

:func:`privfed.tasks.segmentation.generate.public_cases` is that archive (its own seed, many
contributing scanners, thick slices, another contrast protocol, a high-grade population). Its
cases are written in the BraTS layout and read through the task's own transforms, so the model
learns from public scans exactly as it will read the hospitals'. Trained without DP (public
data costs no privacy), keeping the epoch with the best public-validation Dice, and cached by
:func:`privfed.public.cached_build`, so every stage, the ServerApp and each SuperNode start
from the same weights.
"""

from __future__ import annotations

import functools
import inspect
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privfed.public import (
    PublicModel,
    built_public_model,
    one_thread_seeded,
    pretrain_best,
    write_public_model,
)

if TYPE_CHECKING:
    from privfed.tasks.base import Task

__all__ = ["public_model"]

#: Share of the public archive held out to pick the pretraining epoch.
VAL_SHARE = 0.15
LR = 3e-3
#: ``model.segmentation`` keys the public build does not read (training on hospitals' data).
NOT_PRETRAINING = {
    "baseline_epochs",
    "public_cases",
    "public_epochs",
    "dp_batch_size",
    "dp_lr",
    "dp_max_grad_norm",
    "dp_trainable",
}


def _settings(task: Task) -> dict[str, Any]:
    """What the public build depends on: the model and its input grid, the archive's size."""
    m = task.cfg.model.segmentation
    return {
        "model": m.model_dump(mode="json", exclude=NOT_PRETRAINING),
        "public_cases": m.public_cases,
        "public_epochs": m.public_epochs,
    }


def _build(settings: dict[str, Any], task: Task, folder: Path) -> None:
    """Write the archive, pretrain on it, keep the best public-validation epoch's weights."""
    from privfed.tasks.segmentation.generate import PUBLIC_SEED, public_cases, write_case
    from privfed.tasks.segmentation.transforms import CaseDataset

    m = task.cfg.model.segmentation
    scans = folder / "archive"
    case_dirs = [
        write_case(case, scans)
        for case in public_cases(
            settings["public_cases"], fov_mm=m.grid * m.spacing_mm, spacing_mm=m.spacing_mm
        )
    ]
    n_val = max(1, round(len(case_dirs) * VAL_SHARE))
    train = CaseDataset(case_dirs[n_val:], m, train=True, seed=PUBLIC_SEED)
    val = CaseDataset(case_dirs[:n_val], m, train=False)
    with one_thread_seeded(PUBLIC_SEED):
        best = pretrain_best(
            task,
            task.build_model(),
            train,
            val,
            epochs=settings["public_epochs"],
            lr=LR,
            batch_size=m.batch_size,
            label="public segmentation model",
        )
    shutil.rmtree(scans)  # the weights are the build; the scans were only its input
    write_public_model(
        folder,
        best,
        {"settings": settings, "cases": len(case_dirs), "public_val_dice_mean": best.score},
    )


def public_model(task: Task) -> PublicModel:
    """The public UNet for the task's ``model.segmentation`` settings, built once per cache."""
    from privfed.tasks.segmentation import generate, model, transforms

    settings = _settings(task)
    modules = (generate, transforms, model, inspect.getmodule(_build))
    build = functools.partial(_build, settings, task)
    return built_public_model("segmentation-public", settings, modules, build)  # type: ignore[arg-type]
