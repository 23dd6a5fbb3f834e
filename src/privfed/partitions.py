"""Layout of ``data/partitions``: ``<hospital>/<split>/`` folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from privfed.io import DataError

__all__ = ["COHORTS_DIR", "hospital_dirs", "split_dirs"]

#: Evaluation-only cohorts (:meth:`~privfed.tasks.base.Task.write_evaluation_cohorts`) under
#: the partitions; the leading dot keeps them out of :func:`hospital_dirs`, hence out of
#: every training run.
COHORTS_DIR = ".cohorts"


def hospital_dirs(partitions: Path) -> list[Path]:
    """The hospital folders, sorted; a clear error if the partition is missing or empty."""
    partitions = Path(partitions)
    if not partitions.is_dir():
        raise DataError(f"missing partition directory: {partitions}")
    found = sorted(p for p in partitions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"partition directory {partitions} holds no hospital folders")
    for hospital in found:
        for split in ("train", "val", "test"):
            if not (hospital / split).is_dir():
                raise DataError(f"missing partition split: {hospital / split}")
    return found


def split_dirs(hospitals: Sequence[Path], split: str) -> list[Path]:
    return [h / split for h in hospitals]
