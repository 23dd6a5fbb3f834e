"""The strategy registry: every ``train_federated.strategy`` name and what it demands.

One entry per strategy holds what the rest of PrivFed asks about it: how to build it, how many
hospitals a round needs, whether SecAgg+ can serve it, and what the hospital side must do.
The config's allowed names, its SecAgg+ and DP checks, and :func:`make_strategy`'s
minimum-hospitals check all read these entries, so a strategy is described once.

It lives in the config package because config validation reads it (and every stage depends
on the config's code), so it imports neither Flower nor torch: factories are
``"module:function"`` strings, imported only when a strategy is built
(:mod:`privfed.federated.strategies`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from privfed.federated.strategies import StrategyContext

__all__ = [
    "STRATEGIES",
    "HospitalSide",
    "StrategySpec",
    "get_strategy",
    "min_hospitals_for",
    "strategy_names",
]


@dataclass(frozen=True)
class HospitalSide:
    """What a hospital's ClientApp does for a strategy beyond training and replying its weights.

    The server's train message switches each duty on (FedProx's ``proximal-mu``, SCAFFOLD's
    control variate, data_aware's ``trained-val`` flag); this records them where the config
    and the secure path can read them.
    """

    #: adds FedProx's ``mu/2 ||w - w_global||^2`` to its loss (config ``proximal-mu``)
    proximal_term: bool = False
    #: keeps SCAFFOLD's control variate ``c_i``, corrects each step by ``c - c_i``, sends ``Δc_i``
    control_variates: bool = False
    #: scores its trained model on its own validation split and reports that loss
    trained_val_loss: bool = False
    #: why DP-SGD's guarantee would not hold for what it sends (None: DP-SGD is allowed)
    refuses_dp: str | None = None


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy.

    Args:
        name: its ``train_federated.strategy`` value.
        factory: ``"module:function"`` taking a :class:`StrategyContext`, returning the
            Flower strategy (imported when built, so this registry stays light).
        per_malicious: hospitals per round needed per assumed-malicious hospital ``f``.
        min_hospitals: hospitals per round needed besides ``per_malicious x f``.
        secure_aggregation: SecAgg+ can serve it: it needs only the sum of the updates.
        robust: it ranks, trims or takes medians of the individual updates (so it can never
            run on sums alone).
        hospital: what the hospital side does for it.
    """

    name: str
    factory: str
    per_malicious: int = 0
    min_hospitals: int = 1
    secure_aggregation: bool = False
    robust: bool = False
    hospital: HospitalSide = field(default_factory=HospitalSide)

    def __post_init__(self) -> None:
        module, _, attr = self.factory.partition(":")
        if not module or not attr:
            raise ValueError(
                f"strategy {self.name!r}: factory must be 'module:attr', got {self.factory!r}"
            )
        if self.per_malicious < 0 or self.min_hospitals < 1:
            raise ValueError(
                f"strategy {self.name!r}: needs per_malicious >= 0 and min_hospitals >= 1, got "
                f"{self.per_malicious} and {self.min_hospitals}"
            )

    def hospitals_needed(self, *, num_malicious: int) -> int:
        """Replies per round it needs to tolerate ``num_malicious`` hospitals."""
        return self.per_malicious * num_malicious + self.min_hospitals

    def build(self, context: StrategyContext) -> Strategy:
        """The Flower strategy, from the factory imported now."""
        module, _, attr = self.factory.partition(":")
        factory: Callable[[StrategyContext], Strategy] = getattr(
            importlib.import_module(module), attr
        )
        return factory(context)


#: Where the built-in factories live (one function per strategy, named as the strategy).
_BUILTIN = "privfed.federated.strategies:"

#: Every strategy by name, in the order the config lists them.
STRATEGIES: Mapping[str, StrategySpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            StrategySpec("fedavg", _BUILTIN + "fedavg", secure_aggregation=True),
            # Hsu et al.: momentum on the server's step (state: its momentum, resumed)
            StrategySpec("fedavgm", _BUILTIN + "fedavgm"),
            StrategySpec(
                "fedprox",
                _BUILTIN + "fedprox",
                secure_aggregation=True,
                hospital=HospitalSide(proximal_term=True),
            ),
            # Reddi et al.'s adaptive server optimizers
            StrategySpec("fedadam", _BUILTIN + "fedadam"),
            StrategySpec("fedyogi", _BUILTIN + "fedyogi"),
            StrategySpec("fedadagrad", _BUILTIN + "fedadagrad"),
            # Blanchard et al.: n > 2f + 2
            StrategySpec("krum", _BUILTIN + "krum", per_malicious=2, min_hospitals=3, robust=True),
            StrategySpec(
                "multikrum", _BUILTIN + "multikrum", per_malicious=2, min_hospitals=3, robust=True
            ),
            # El Mhamdi et al.: n >= 4f + 3
            StrategySpec(
                "bulyan", _BUILTIN + "bulyan", per_malicious=4, min_hospitals=3, robust=True
            ),
            # a trimmed mean or median of fewer than 3 is the mean of one or two
            StrategySpec("trimmed_mean", _BUILTIN + "trimmed_mean", min_hospitals=3, robust=True),
            StrategySpec("median", _BUILTIN + "median", min_hospitals=3, robust=True),
            StrategySpec(
                "scaffold",
                _BUILTIN + "scaffold",
                hospital=HospitalSide(
                    control_variates=True,
                    refuses_dp=(
                        "each hospital's control variate is an un-clipped, un-noised gradient "
                        "of its data, sent to the server every round, so DP-SGD's guarantee "
                        "would not hold"
                    ),
                ),
            ),
            StrategySpec(
                "data_aware", _BUILTIN + "data_aware", hospital=HospitalSide(trained_val_loss=True)
            ),
        )
    }
)


def strategy_names(*, where: Callable[[StrategySpec], bool] | None = None) -> tuple[str, ...]:
    """Registered names (those ``where`` accepts), in registry order."""
    return tuple(name for name, spec in STRATEGIES.items() if where is None or where(spec))


def get_strategy(name: str) -> StrategySpec:
    """The entry for ``name``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the names that are).
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; registered: {', '.join(strategy_names())}"
        ) from None


def min_hospitals_for(strategy: str, num_malicious: int) -> int:
    """Replies per round ``strategy`` needs to tolerate ``num_malicious`` hospitals."""
    return get_strategy(strategy).hospitals_needed(num_malicious=num_malicious)
