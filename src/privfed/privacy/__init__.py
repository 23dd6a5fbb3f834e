"""Differential privacy: Opacus DP-SGD whose accountant survives across federated rounds."""

from __future__ import annotations

from privfed.privacy.accounting import (
    check_delta,
    epsilon_from_history,
    history_steps,
    noise_multiplier_for_target,
)
from privfed.privacy.group import group_privacy

__all__ = [
    "check_delta",
    "epsilon_from_history",
    "group_privacy",
    "history_steps",
    "noise_multiplier_for_target",
]
