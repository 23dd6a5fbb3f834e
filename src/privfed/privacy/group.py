"""Group privacy: what a per-example (ε, δ) guarantee gives a unit holding several examples.

DP-SGD's accountant protects one training example. Where one patient contributes several
examples (notes: one note per example), the patient is a group of k examples, and the per-patient
guarantee follows from the group-privacy bound for approximate DP.
"""

from __future__ import annotations

import math

__all__ = ["group_privacy"]


def group_privacy(*, epsilon: float, delta: float, group_size: int) -> tuple[float, float]:
    """``(ε_k, δ_k)`` for a group of ``group_size`` = k examples of an (ε, δ)-DP mechanism.

    ε_k = k·ε and δ_k = k·e^{(k−1)ε}·δ: chain the (ε, δ) bound over the k neighbouring
    datasets between the two that differ in the whole group, which gives
    δ·Σ_{i<k} e^{iε} ≤ k·e^{(k−1)ε}·δ (the group-privacy lemma for approximate DP, e.g.
    S. Vadhan, "The Complexity of Differential Privacy", 2017; Dwork & Roth 2014, Thm 2.2, for
    pure DP). k = 1 returns (ε, δ) unchanged. The bound is loose (it ignores that DP-SGD
    samples each example independently), so it is an upper bound, never an estimate.

    Returns:
        ``(ε_k, δ_k)``, δ_k capped at 1: a δ_k of 1 means the bound promises nothing.

    Raises:
        ValueError: ``group_size`` below 1, ``epsilon`` negative or NaN, or ``delta``
            outside [0, 1].
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer ≥ 1, got {group_size!r}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be ≥ 0, got {epsilon}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    k = group_size
    if k == 1:
        return epsilon, delta
    if delta == 0:
        return k * epsilon, 0.0
    # in logs: e^{(k−1)ε} overflows a float long before the bound stops meaning anything
    log_delta = math.log(k) + (k - 1) * epsilon + math.log(delta)
    return k * epsilon, 1.0 if log_delta >= 0 else math.exp(log_delta)
