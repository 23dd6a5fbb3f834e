"""Task plug-ins, looked up by name: stages never branch on the task.

A task is one folder: ``task.py`` (a :class:`~privfed.tasks.base.Task`), ``settings.py`` (its
params.yaml keys, a :class:`~privfed.config.TaskSettings`) and whatever modules it needs. It
becomes available through one registration, in the spirit of Opacus' ``register_accountant``:

- inside the package, one line in :data:`_BUILTIN`;
- from outside, :func:`register_task` in a module that ``base.plugins`` names, or a Python
  entry point in the group ``privfed.tasks`` whose object is a :class:`TaskEntry`.

Settings and task classes are named as ``"module:attribute"`` strings and imported only when
used, so validating a config never imports a task's model code (torch, MONAI, transformers).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from privfed.tasks.base import Task

if TYPE_CHECKING:
    from privfed.config import PrivFedConfig
    from privfed.config.sections import TaskSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "Task",
    "TaskEntry",
    "available_tasks",
    "get_task",
    "register_task",
    "registry_key",
    "runtime_imports",
    "task_settings",
]

#: Python entry-point group of tasks installed by other packages (objects are TaskEntry).
ENTRY_POINT_GROUP = "privfed.tasks"


@dataclass(frozen=True)
class TaskEntry:
    """One registered task.

    Args:
        name: the value of ``base.task`` that selects it.
        task: ``"module:Class"`` of its :class:`Task` subclass.
        settings: ``"module:attribute"`` of its :class:`~privfed.config.TaskSettings`, or None
            when the task has no keys of its own.
    """

    name: str
    task: str
    settings: str | None = None

    def __post_init__(self) -> None:
        for label, ref in (("task", self.task), ("settings", self.settings)):
            if ref is not None and ref.count(":") != 1:
                raise ValueError(f"task {self.name!r}: {label}={ref!r} must be 'module:attribute'")
        if not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be a Python identifier")


def _builtin(name: str) -> TaskEntry:
    package = f"privfed.tasks.{name}"
    cls = "".join(part.title() for part in name.split("_")) + "Task"
    return TaskEntry(name, f"{package}.task:{cls}", f"{package}.settings:SETTINGS")


_BUILTIN = ("readmission", "tabular", "segmentation", "notes", "retina", "extraction")
_REGISTRY: dict[str, TaskEntry] = {name: _builtin(name) for name in _BUILTIN}
_entry_points_loaded = False


def register_task(entry: TaskEntry, *, replace: bool = False) -> TaskEntry:
    """Make ``entry`` available as ``base.task: <entry.name>``.

    Raises:
        ValueError: the name is taken (pass ``replace=True`` to override on purpose).
    """
    _load_entry_points()
    if entry.name in _REGISTRY and not replace and _REGISTRY[entry.name] != entry:
        raise ValueError(
            f"task {entry.name!r} is already registered as {_REGISTRY[entry.name].task}; "
            "pass replace=True to replace it"
        )
    _REGISTRY[entry.name] = entry
    return entry


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        entry = point.load()
        if not isinstance(entry, TaskEntry):
            raise TypeError(
                f"entry point {point.name!r} in group {ENTRY_POINT_GROUP!r} must name a "
                f"TaskEntry, got {type(entry).__name__} from {point.value!r}"
            )
        register_task(entry)


def _resolve(ref: str) -> object:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def available_tasks() -> tuple[str, ...]:
    """Names ``base.task`` accepts: the built-in tasks, then registered ones."""
    _load_entry_points()
    return tuple(_REGISTRY)


def registry_key() -> tuple[TaskEntry, ...]:
    """The registered entries (what the config schema is composed from)."""
    _load_entry_points()
    return tuple(_REGISTRY.values())


def task_settings(name: str) -> TaskSettings | None:
    """The :class:`~privfed.config.TaskSettings` of task ``name`` (imports only its settings)."""
    entry = _entry(name)
    if entry.settings is None:
        return None
    settings = _resolve(entry.settings)
    from privfed.config.sections import TaskSettings

    if not isinstance(settings, TaskSettings):
        raise TypeError(f"task {name!r}: {entry.settings} is not a TaskSettings")
    return settings


def _entry(name: str) -> TaskEntry:
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def runtime_imports(name: str) -> tuple[str, ...]:
    """Task ``name``'s :attr:`Task.runtime_imports` (imports its class, builds nothing)."""
    return tuple(_task_class(name).runtime_imports)


def _task_class(name: str) -> type[Task]:
    cls = _resolve(_entry(name).task)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"task {name!r}: {_entry(name).task} is not a privfed Task subclass")
    return cls


def get_task(name: str, cfg: PrivFedConfig) -> Task:
    """The task plug-in called ``name``, bound to the run's ``cfg``.

    Raises:
        ValueError: ``name`` is not a registered task.
    """
    return _task_class(name)(cfg)
