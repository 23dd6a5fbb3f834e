"""Saving and loading model weights with the metadata needed to rebuild the model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privfed.config import PrivFedConfig
from privfed.io import DataError, atomic_path
from privfed.tasks import get_task

__all__ = ["save_model", "load_model", "load_state"]

MODEL_FILE = "model.pt"


def save_model(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    *,
    task: str,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write weights atomically, with the task name and free-form metadata."""
    payload = {
        "task": task,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing model file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"cannot load model file {path}: {err}") from err


def load_model(path: str | Path, cfg: PrivFedConfig) -> nn.Module:
    """Rebuild the task's model from ``cfg`` and load the saved weights into it."""
    payload = load_state(path)
    if payload.get("task") != cfg.base.task:
        raise DataError(
            f"{path} holds a model for task {payload.get('task')!r}, not {cfg.base.task!r}"
        )
    model = get_task(cfg.base.task, cfg).build_model()
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model
