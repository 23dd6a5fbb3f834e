"""Data-aware aggregation: FedAvg weights scaled by how well each hospital's update fits.

In the spirit of Fed-MedLoRA+'s adaptive aggregation for LoRA adapters: a hospital's weight
grows with its training examples ``n_i`` and shrinks with the validation loss ``L_i`` of the
model it trained (on its own validation split), ``w_i ∝ n_i · exp(-(L_i - min_j L_j) / T)``.
``T`` (``train_federated.data_aware_temperature``) sets how strongly loss counts: large ``T``
is FedAvg. ``train_federated.data_aware_weighting: exp_one_minus_loss`` uses Fed-MedLoRA+'s
rule instead, ``w_i ∝ exp(1 - L_i)`` (sizes and ``T`` play no part: the hospital whose model
fits its own held-out notes best counts most). Each hospital scores its trained model only
when this strategy asks (:data:`TRAINED_VAL_FLAG` in the train config).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

__all__ = [
    "WEIGHTINGS",
    "DataAwareFedAvg",
    "TRAINED_VAL_FLAG",
    "TRAINED_VAL_LOSS",
    "WEIGHT_KEY",
    "data_aware_weights",
]

#: Train-config flag: the hospital also reports its trained model's validation loss.
TRAINED_VAL_FLAG = "trained-val"
#: Reply metric: mean per-example loss of the trained model on the hospital's validation split.
TRAINED_VAL_LOSS = "trained_val_loss"
#: Reply metric the strategy adds and FedAvg weights by.
WEIGHT_KEY = "data-aware-weight"
#: ``size_loss``: n_i · exp(-(L_i - min L) / T); ``exp_one_minus_loss``: exp(1 - L_i).
WEIGHTINGS = ("size_loss", "exp_one_minus_loss")


def data_aware_weights(
    num_examples: Sequence[float],
    losses: Sequence[float],
    *,
    temperature: float,
    weighting: str = "size_loss",
) -> list[float]:
    """Normalized weights by ``weighting`` (:data:`WEIGHTINGS`); a non-finite loss gets 0.

    ``exp_one_minus_loss`` is computed as ``exp(-(L_i - min L))``, the same after
    normalization (``exp(1 - L_i) / sum_j exp(1 - L_j)``) without underflow at large losses.

    Raises:
        ValueError: ``temperature`` is not positive, ``weighting`` unknown, the lengths
            differ, or no hospital has a finite loss and positive size.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if len(num_examples) != len(losses):
        raise ValueError(f"{len(num_examples)} sizes but {len(losses)} losses")
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        raise ValueError(f"no finite validation loss among {list(losses)}")
    best = min(finite)
    if weighting == "exp_one_minus_loss":
        raw = [
            math.exp(-(loss - best)) if math.isfinite(loss) and n > 0 else 0.0
            for n, loss in zip(num_examples, losses, strict=True)
        ]
    else:
        raw = [
            n * math.exp(-(loss - best) / temperature) if math.isfinite(loss) and n > 0 else 0.0
            for n, loss in zip(num_examples, losses, strict=True)
        ]
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"no hospital has a positive weight (sizes {list(num_examples)})")
    return [w / total for w in raw]


class DataAwareFedAvg(FedAvg):
    """FedAvg whose weights come from :func:`data_aware_weights` (see the module docstring)."""

    def __init__(
        self, *, temperature: float = 1.0, weighting: str = "size_loss", **kwargs: Any
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"data_aware temperature must be > 0, got {temperature}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"data_aware weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        super().__init__(weighted_by_key=WEIGHT_KEY, **kwargs)
        self.temperature = temperature
        self.weighting = weighting

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[TRAINED_VAL_FLAG] = True
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        if ok:
            metrics = [r.content["metrics"] for r in ok]
            missing = [i for i, m in enumerate(metrics) if TRAINED_VAL_LOSS not in m]
            if missing:
                raise ValueError(
                    f"round {server_round}: {len(missing)} repl(ies) lack {TRAINED_VAL_LOSS!r}; "
                    "every hospital must run a PrivFed ClientApp that honours "
                    f"{TRAINED_VAL_FLAG!r}"
                )
            weights = data_aware_weights(
                [float(m["num-examples"]) for m in metrics],
                [float(m[TRAINED_VAL_LOSS]) for m in metrics],
                temperature=self.temperature,
                weighting=self.weighting,
            )
            for m, w in zip(metrics, weights, strict=True):
                m[WEIGHT_KEY] = w
        return super().aggregate_train(server_round, replies)
