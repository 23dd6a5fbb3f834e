"""A red-team harness: a hospital that corrupts the update it sends.

Used by the tests and benchmarks that check update screening and the robust strategies. It is
switched on only by a SuperNode's node config (``attack=<mode>``), which the operator of that
SuperNode sets; nothing in params.yaml or the server can turn it on. Modes, with ``u`` the honest
update (trained weights minus the received global weights) and ``g`` the global weights:

- ``scale``: ``g + 100 u``, a boosted update (model replacement attack);
- ``sign_flip``: ``g - 100 u``, pushes the model away from the hospital's own descent direction;
- ``random``: ``g + N(0, 1)`` on every weight the hospital trained (not on fixed buffers),
  noise of the scale of the weights themselves;
- ``nan``: the honest weights with one NaN (a corrupted or diverged update).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["ATTACKS", "corrupt"]

ATTACKS = ("scale", "sign_flip", "random", "nan")
#: How strongly ``scale`` and ``sign_flip`` boost the honest update.
BOOST = 100.0


def corrupt(
    trained: Mapping[str, np.ndarray],
    received: Mapping[str, np.ndarray],
    mode: str,
    *,
    seed: int,
) -> dict[str, np.ndarray]:
    """The update a malicious hospital sends instead of ``trained`` (same names/shapes/dtypes)."""
    if mode not in ATTACKS:
        raise ValueError(f"node config attack={mode!r}: choose one of {', '.join(ATTACKS)}")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, weights in trained.items():
        if not np.issubdtype(weights.dtype, np.floating):
            out[name] = weights.copy()
            continue
        g = received[name]
        if mode == "scale":
            values = g + BOOST * (weights - g)
        elif mode == "sign_flip":
            values = g - BOOST * (weights - g)
        elif mode == "random":
            trained_here = weights != g
            values = np.where(trained_here, g + rng.standard_normal(weights.shape), weights)
        else:
            values = weights.copy()
        out[name] = np.asarray(values, dtype=weights.dtype)
    if mode == "nan":
        first = next(n for n, v in out.items() if np.issubdtype(v.dtype, np.floating) and v.size)
        out[first].reshape(-1)[0] = np.nan
    return out
