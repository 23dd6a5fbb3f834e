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
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Subset

from privfed.public import DONE_FILE, cache_key, cached_build, one_thread_seeded, state_digest

if TYPE_CHECKING:
    from privfed.tasks.base import Task

__all__ = ["PublicModel", "public_model"]

log = logging.getLogger(__name__)

STATE_FILE = "public.pt"
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
        model = task.build_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        best, best_auroc, best_epoch = None, -1.0, 0
        for epoch in range(settings["public_epochs"]):
            model.train()
            for batch in DataLoader(train, batch_size=BATCH_SIZE, shuffle=True):
                optimizer.zero_grad(set_to_none=True)
                task.loss(model, batch).backward()
                optimizer.step()
            auroc = task.evaluate(model, val)["macro_auroc"]
            log.info(
                "public readmission model: epoch %d/%d public val macro_auroc=%.4f",
                epoch + 1,
                settings["public_epochs"],
                auroc,
            )
            if auroc > best_auroc:
                best_auroc, best_epoch = auroc, epoch + 1
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best is not None  # public_epochs >= 1 (config)
    torch.save(best, folder / STATE_FILE)
    meta = {
        "settings": settings,
        "patients": len(dataset),
        "best_epoch": best_epoch,
        "public_val_macro_auroc": best_auroc,
        "digest": state_digest(best),
    }
    (folder / DONE_FILE).write_text(json.dumps(meta, indent=2))


class PublicModel:
    """The cached public weights and what the build recorded (``meta.json``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, Any] = json.loads((folder / DONE_FILE).read_text())
        self.state: dict[str, torch.Tensor] = torch.load(
            folder / STATE_FILE, map_location="cpu", weights_only=True
        )
        if state_digest(self.state) != self.meta["digest"]:
            raise ValueError(f"{folder / STATE_FILE} does not match its digest; delete {folder}")


@functools.cache
def _load(folder: str) -> PublicModel:
    return PublicModel(Path(folder))


def public_model(task: Task) -> PublicModel:
    """The public model for the task's architecture (``task.cfg``), built once per cache."""
    from privfed.tasks.readmission import features, generate

    settings = _settings(task.cfg)
    key = cache_key(settings, (generate, features, inspect.getmodule(_build)))
    folder = cached_build("readmission-public", key, functools.partial(_build, settings, task))
    return _load(str(folder))
