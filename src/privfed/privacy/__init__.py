"""Differential privacy: Opacus DP-SGD whose accountant survives across federated rounds."""

from __future__ import annotations

from privfed.privacy.accounting import (
    epsilon_from_history,
    noise_multiplier_for_target,
)

__all__ = ["epsilon_from_history", "noise_multiplier_for_target"]
