"""Task ``toy``'s keys: ``generate_data.toy`` and ``model.toy``."""

from __future__ import annotations

from pydantic import Field

from privfed.config import TaskSettings
from privfed.config.sections import Section


class ToyData(Section):
    """How far apart the two classes are, and how much each hospital is shifted."""

    separation: float = Field(2.0, gt=0.0)
    site_shift: float = Field(0.5, ge=0.0)


class ToyModel(Section):
    """Step size (a logistic regression takes large ones) and DP-SGD's batch."""

    lr: float = Field(0.5, gt=0.0)
    dp_batch_size: int = Field(16, ge=1)


SETTINGS = TaskSettings(nested={"generate_data": ToyData, "model": ToyModel})
