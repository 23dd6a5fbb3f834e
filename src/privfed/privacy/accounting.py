"""Privacy accounting over a whole federated run.

Opacus accountants keep a history of ``(noise_multiplier, sample_rate, steps)`` entries. A
hospital's history is carried from round to round (Flower's Opacus example creates a fresh
``PrivacyEngine`` every round, which silently restarts ε at zero); ε is then the composition of
all rounds' steps, computed by the accountant named in params.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

__all__ = [
    "check_delta",
    "epsilon_from_history",
    "history_steps",
    "merged_history",
    "noise_multiplier_for_target",
]


def history_steps(history: Iterable[Sequence[float]]) -> int:
    """DP-SGD steps in an accountant history of ``(noise_multiplier, sample_rate, steps)``."""
    return sum(int(entry[2]) for entry in history)


def epsilon_from_history(
    history: Sequence[Sequence[float]], *, delta: float, accountant: str = "rdp"
) -> float:
    """ε(δ) of the composed steps in ``history`` (``inf`` for no noise, 0 for no steps)."""
    if not history:
        return 0.0
    if any(float(sigma) == 0.0 for sigma, _, _ in history):
        return math.inf
    acc = create_accountant(accountant)
    acc.history = merged_history(history)
    return float(acc.get_epsilon(delta=delta))


def merged_history(history: Iterable[Sequence[float]]) -> list[tuple[float, float, int]]:
    """One entry per ``(noise_multiplier, sample_rate)``, its steps summed.

    Composition does not depend on the order of the mechanisms, so this is the same privacy
    loss; a run appends one entry per round, and the PRV accountant's cost grows with the
    entries (12 identical rounds: 1.6 s as 12 entries, one entry's cost merged).
    """
    steps: dict[tuple[float, float], int] = {}
    for sigma, q, n in history:
        key = (float(sigma), float(q))
        steps[key] = steps.get(key, 0) + int(n)
    return [(sigma, q, n) for (sigma, q), n in steps.items()]


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


def check_delta(delta: float, examples: Mapping[str, int]) -> str | None:
    """Refuse a δ that permits releasing a record outright; warn where it is merely loose.

    (ε, δ)-DP lets a mechanism fail with probability δ, e.g. by publishing one record in the
    clear: with δ ≥ 1/n that can be "one of the n patients", and ε means nothing. The usual rule
    is δ well below 1/n; we refuse δ ≥ 1/n and warn above 1/(10·n), n the smallest hospital's
    training examples (each hospital's guarantee is about its own patients).

    Returns:
        A warning to log, or None.

    Raises:
        ValueError: naming ``privacy.delta``, the hospital and its n.
    """
    if not examples:
        raise ValueError("no hospital's training examples to check privacy.delta against")
    hospital, n = min(examples.items(), key=lambda item: item[1])
    if delta >= 1.0 / n:
        raise ValueError(
            f"privacy.delta={delta:g} is not below 1/n = {1.0 / n:.3g} for {hospital} "
            f"(n = {n} training examples): with δ ≥ 1/n the guarantee allows releasing a "
            f"patient's record outright; use δ ≤ {0.1 / n:.1g}"
        )
    if delta > 0.1 / n:
        return (
            f"privacy.delta={delta:g} is above 1/(10 n) = {0.1 / n:.3g} for {hospital} "
            f"(n = {n}): a loose guarantee; δ ≤ {0.1 / n:.1g} is the usual choice"
        )
    return None
