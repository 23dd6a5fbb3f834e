"""Building the Flower strategy ``train_federated.strategy`` names, from its registry entry.

The factories below are the registry's (:mod:`privfed.config.strategy_registry`): one
function per strategy, each given the same :class:`StrategyContext`. Flower's own strategies
are used where Flower has them; SCAFFOLD and data-aware FedAvg are ours. Every strategy gets
PrivFed's sampling arguments, whose waits stay bounded (see :func:`sampling_arguments`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from privfed.config import PrivFedConfig
from privfed.config.strategy_registry import get_strategy
from privfed.federated.data_aware import DataAwareFedAvg
from privfed.federated.scaffold import Scaffold

__all__ = [
    "StrategyContext",
    "make_strategy",
    "min_train_nodes",
    "sampling_arguments",
]


def min_train_nodes(cfg: PrivFedConfig, num_nodes: int) -> int:
    """Hospitals that must return an update for a round to count.

    ``train_federated.min_train_nodes`` when set; otherwise every sampled hospital but one, so
    one hospital that dies mid-round does not stop the run, yet never fewer than two (one
    hospital's update is not a federated average) nor than the strategy needs against
    ``num_malicious`` hospitals (a robust rule on too few updates guarantees nothing).
    """
    fed = cfg.train_federated
    if fed.min_train_nodes is not None:
        return fed.min_train_nodes
    sampled = max(1, math.ceil(fed.fraction_train * num_nodes))
    needed = get_strategy(fed.strategy).hospitals_needed(num_malicious=fed.num_malicious)
    return min(sampled, max(2, sampled - 1, needed))


def sampling_arguments(cfg: PrivFedConfig, num_nodes: int) -> dict[str, Any]:
    """The sampling keywords every Flower strategy takes, as PrivFed sets them.

    ``min_available_nodes`` is the round's minimum, not ``num_nodes``: Flower waits for it
    without a bound, so a hospital that dropped out mid-run would stall every later round.
    """
    fed = cfg.train_federated
    min_train = min_train_nodes(cfg, num_nodes)
    return {
        "fraction_train": fed.fraction_train,
        "fraction_evaluate": 0.0,  # validation rides on the next round's train message
        "min_train_nodes": min_train,
        "min_evaluate_nodes": 0,
        "min_available_nodes": min_train,
    }


@dataclass(frozen=True)
class StrategyContext:
    """What a factory may read: the config, the federation's size and the model's names."""

    cfg: PrivFedConfig
    #: hospitals in the federation (``N``)
    num_nodes: int
    #: hospitals sampled per round
    per_round: int
    #: the model's trainable arrays (SCAFFOLD's control variates; None: every float array)
    parameter_names: Sequence[str] | None
    #: :func:`sampling_arguments`
    sampling: dict[str, Any]


def make_strategy(
    cfg: PrivFedConfig, num_nodes: int, *, parameter_names: Sequence[str] | None = None
) -> Strategy:
    """The Flower strategy ``train_federated.strategy`` names, with PrivFed's bounded waits.

    Raises:
        ValueError: a round samples fewer hospitals than the strategy needs for
            ``train_federated.num_malicious``.
    """
    fed = cfg.train_federated
    spec = get_strategy(fed.strategy)
    sampling = sampling_arguments(cfg, num_nodes)
    per_round = max(int(num_nodes * fed.fraction_train), sampling["min_train_nodes"])
    needed = spec.hospitals_needed(num_malicious=fed.num_malicious)
    if per_round < needed:
        raise ValueError(
            f"train_federated.strategy={fed.strategy} with num_malicious={fed.num_malicious} "
            f"needs at least {needed} hospitals per round; this run samples {per_round} of "
            f"{num_nodes}"
        )
    return spec.build(
        StrategyContext(
            cfg=cfg,
            num_nodes=num_nodes,
            per_round=per_round,
            parameter_names=parameter_names,
            sampling=sampling,
        )
    )


# -- the registry's factories ------------------------------------------------------------------
def fedavg(ctx: StrategyContext) -> Strategy:
    return FedAvg(**ctx.sampling)


def fedavgm(ctx: StrategyContext) -> Strategy:
    """Hsu et al.: FedAvg with server momentum; the server's step is 1 (the hospitals' mean)."""
    return FedAvgM(server_momentum=ctx.cfg.train_federated.server_momentum, **ctx.sampling)


def fedprox(ctx: StrategyContext) -> Strategy:
    return FedProx(proximal_mu=ctx.cfg.train_federated.proximal_mu, **ctx.sampling)


def _adaptive(kind: type[FedAdam | FedYogi | FedAdagrad], ctx: StrategyContext) -> Strategy:
    """Reddi et al.: the averaged update is a pseudo-gradient that the optimizer applies.

    ``eta`` is ``server_lr``; Flower's moment defaults (beta_1 0.9, beta_2 0.99) stay;
    ``eta_l`` is only recorded by Flower.
    """
    fed = ctx.cfg.train_federated
    return kind(eta=fed.server_lr, eta_l=ctx.cfg.train.lr, tau=fed.server_tau, **ctx.sampling)


def fedadam(ctx: StrategyContext) -> Strategy:
    return _adaptive(FedAdam, ctx)


def fedyogi(ctx: StrategyContext) -> Strategy:
    return _adaptive(FedYogi, ctx)


def fedadagrad(ctx: StrategyContext) -> Strategy:
    return _adaptive(FedAdagrad, ctx)


def krum(ctx: StrategyContext) -> Strategy:
    return Krum(num_malicious_nodes=ctx.cfg.train_federated.num_malicious, **ctx.sampling)


def multikrum(ctx: StrategyContext) -> Strategy:
    fed = ctx.cfg.train_federated
    select = fed.multikrum_select or ctx.per_round - fed.num_malicious
    return MultiKrum(
        num_malicious_nodes=fed.num_malicious, num_nodes_to_select=select, **ctx.sampling
    )


def bulyan(ctx: StrategyContext) -> Strategy:
    return Bulyan(num_malicious_nodes=ctx.cfg.train_federated.num_malicious, **ctx.sampling)


def trimmed_mean(ctx: StrategyContext) -> Strategy:
    return FedTrimmedAvg(beta=ctx.cfg.train_federated.trim_fraction, **ctx.sampling)


def median(ctx: StrategyContext) -> Strategy:
    return FedMedian(**ctx.sampling)


def scaffold(ctx: StrategyContext) -> Strategy:
    return Scaffold(
        num_hospitals=ctx.num_nodes,
        server_lr=ctx.cfg.train_federated.scaffold_server_lr,
        control_keys=ctx.parameter_names,
        **ctx.sampling,
    )


def data_aware(ctx: StrategyContext) -> Strategy:
    fed = ctx.cfg.train_federated
    return DataAwareFedAvg(
        temperature=fed.data_aware_temperature, weighting=fed.data_aware_weighting, **ctx.sampling
    )
