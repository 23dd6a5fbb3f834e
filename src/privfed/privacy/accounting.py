"""Privacy accounting over a whole federated run.

Opacus accountants keep a history of ``(noise_multiplier, sample_rate, steps)`` entries. A
hospital's history is carried from round to round (Flower's Opacus example creates a fresh
``PrivacyEngine`` every round, which silently restarts ε at zero); ε is then the composition of
all rounds' steps, computed by the accountant named in params.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

__all__ = ["epsilon_from_history", "noise_multiplier_for_target"]


def epsilon_from_history(
    history: Sequence[Sequence[float]], *, delta: float, accountant: str = "rdp"
) -> float:
    """ε(δ) of the composed steps in ``history`` (``inf`` for no noise, 0 for no steps)."""
    if not history:
        return 0.0
    if any(float(sigma) == 0.0 for sigma, _, _ in history):
        return math.inf
    acc = create_accountant(accountant)
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(acc.get_epsilon(delta=delta))


def noise_multiplier_for_target(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """Noise multiplier keeping ε ≤ ``target_epsilon`` after ``steps`` steps at ``sample_rate``."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )
