"""Update screening: what the server checks in each hospital's update before aggregating it.

A hospital's reply is rejected, with the hospital and the reason logged and recorded in the
round's row, when its weights

- hold NaN or ±Inf (a diverged or corrupted update would poison any average);
- do not match the global model's tensor names, shapes or dtypes;
- change a fixed tensor (a buffer such as the tabular task's federated normalizers, which
  training never changes: a hospital that sends other values is tampering with them);
- claim a non-positive or non-finite ``num-examples`` (FedAvg weights by it);
- move the model much further than the round's other updates: the L2 norm of
  ``reply - global`` exceeds ``norm_factor`` x the median norm of the *other* accepted
  updates. Leave-one-out, so that with two hospitals the larger is compared with the smaller
  and a single huge update cannot raise the bar it is held to.

Screening is a first line against faults and crude attacks; a colluding minority that stays
inside the norm bound is the robust strategies' job (Krum, Bulyan, trimmed mean, median).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Screened", "screen_updates", "update_norm"]


@dataclass(frozen=True)
class Screened:
    """The outcome of screening one round: accepted indices, and rejected ones with a reason."""

    accepted: list[int]
    rejected: dict[int, str]


def _structure_problem(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> str | None:
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        return f"tensor names differ from the global model (missing {missing}, unexpected {extra})"
    for name, ref in reference.items():
        got = update[name]
        if got.shape != ref.shape:
            return f"tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
        if got.dtype != ref.dtype:
            return f"tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}"
    return None


def _changed_fixed(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], fixed: Collection[str]
) -> str | None:
    for name in sorted(fixed):
        if not np.array_equal(update[name], reference[name], equal_nan=True):
            return f"fixed tensor {name!r} (a buffer training never changes) was altered"
    return None


def _non_finite(update: Mapping[str, np.ndarray]) -> str | None:
    for name, values in update.items():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            return f"tensor {name!r} holds {bad} NaN/Inf value(s)"
    return None


def update_norm(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of ``update - reference`` over all floating-point tensors (float64)."""
    total = 0.0
    for name, ref in reference.items():
        if np.issubdtype(ref.dtype, np.floating):
            diff = update[name].astype(np.float64) - ref.astype(np.float64)
            total += float(np.dot(diff.ravel(), diff.ravel()))
    return math.sqrt(total)


def screen_updates(
    updates: Sequence[Mapping[str, np.ndarray]],
    num_examples: Sequence[float],
    reference: Mapping[str, np.ndarray],
    *,
    norm_factor: float,
    fixed: Collection[str] = (),
) -> Screened:
    """Screen one round's updates against the global model ``reference`` they started from.

    ``fixed`` names tensors every honest update returns unchanged (the model's buffers).
    """
    rejected: dict[int, str] = {}
    norms: dict[int, float] = {}
    for i, update in enumerate(updates):
        n = num_examples[i]
        reason = (
            _structure_problem(update, reference)
            or _non_finite(update)
            or _changed_fixed(update, reference, fixed)
            or (None if math.isfinite(n) and n > 0 else f"num-examples is {n}")
        )
        if reason:
            rejected[i] = reason
        else:
            norms[i] = update_norm(update, reference)
    for i, norm in norms.items():
        others = [v for j, v in norms.items() if j != i]
        if not others:
            continue
        bound = norm_factor * float(np.median(others))
        if norm > bound and norm > 0.0:
            rejected[i] = (
                f"update norm {norm:.4g} is more than {norm_factor:g} x the median of the "
                f"round's other updates ({float(np.median(others)):.4g})"
            )
    accepted = [i for i in range(len(updates)) if i not in rejected]
    return Screened(accepted=accepted, rejected=rejected)
