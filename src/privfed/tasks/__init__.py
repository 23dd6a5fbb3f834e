"""Task plug-ins. A task is one module implementing :class:`privfed.tasks.base.Task`.

Stages look tasks up here by name and never branch on it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from privfed.tasks.base import Task

if TYPE_CHECKING:
    from privfed.config import PrivFedConfig

__all__ = ["Task", "available_tasks", "get_task"]

_REGISTRY: dict[str, str] = {
    "readmission": "privfed.tasks.readmission:ReadmissionTask",
    "tabular": "privfed.tasks.tabular:TabularTask",
    "segmentation": "privfed.tasks.segmentation:SegmentationTask",
    "notes": "privfed.tasks.notes:NotesTask",
}


def available_tasks() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_task(name: str, cfg: PrivFedConfig | None = None) -> Task:
    """Instantiate the task plug-in called ``name`` (bound to the run's ``cfg`` when given).

    Raises:
        ValueError: ``name`` is not a registered task.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {sorted(_REGISTRY)}")
    module_name, cls_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)(cfg)
