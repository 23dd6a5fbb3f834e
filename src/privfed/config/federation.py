"""Settings of ``train_federated``: the strategy, the federation's timing and SecAgg+."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from privfed.config.sections import Section
from privfed.config.strategy_registry import STRATEGIES, strategy_names

__all__ = [
    "SECAGG_MODULUS",
    "SECAGG_STRATEGIES",
    "SecureAggregationSection",
    "TrainFederatedSection",
]


#: Flower's SecAgg+ mask modulus (``SecAggPlusWorkflow(modulus_range=...)``, its default).
SECAGG_MODULUS = 2**32
#: Strategies that need only the sum of the hospitals' updates, so SecAgg+ can serve them.
SECAGG_STRATEGIES = strategy_names(where=lambda spec: spec.secure_aggregation)
#: ``train_federated.strategy``'s allowed values: the registry's names
#: (:mod:`privfed.config.strategy_registry`), so a validation error lists every one of them.
StrategyName = Literal[strategy_names()]  # type: ignore[valid-type]


class SecureAggregationSection(Section):
    """Flower's SecAgg+: the server learns only the sum of the hospitals' weighted updates.

    Each hospital sends ``num-examples / max_weight x (its weights - the global weights)``,
    clipped to ``±clipping_range`` per value and stochastically quantized to integers in
    ``[0, quantization_range]``, masked so that only the sum over hospitals can be unmasked.
    The server divides the sum by the total ``num-examples / max_weight``: FedAvg's mean.
    """

    enabled: bool = False
    num_shares: float = Field(
        1.0, gt=0.0, le=1.0, description="share of the round's hospitals holding key shares"
    )
    reconstruction_threshold: float = Field(
        0.67, gt=0.0, le=1.0, description="share of the key shares needed to unmask"
    )
    clipping_range: float = Field(
        1.0, gt=0.0, description="bound on each value of a hospital's update (larger: clipped)"
    )
    quantization_range: int = Field(
        2**22, ge=2, lt=2**31, description="integer levels per value (finer: larger sums)"
    )
    max_weight: int = Field(
        1000, ge=1, description="largest num-examples of any hospital's training split"
    )

    def quantization_step(self) -> float:
        """One quantization level, in units of a hospital's weighted update value."""
        return 2.0 * self.clipping_range / self.quantization_range

    def error_bound(self, num_examples: Sequence[float]) -> float:
        """Worst-case per-value error of the secure FedAvg mean of these hospitals' updates.

        Stochastic rounding moves each hospital's weighted value by less than one step; the
        server divides the sum by the total weight ``sum(n) / max_weight``. Values that were
        clipped are not covered (they are counted per hospital instead).
        """
        total = float(sum(num_examples))
        if total <= 0:
            raise ValueError(f"num_examples must sum to a positive number, got {num_examples}")
        return len(num_examples) * self.quantization_step() * self.max_weight / total


class TrainFederatedSection(Section):
    strategy: StrategyName = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)
    scaffold_server_lr: float = Field(
        1.0, gt=0.0, description="scaffold: global step on the hospitals' mean update (eta_g)"
    )
    data_aware_temperature: float = Field(
        1.0, gt=0.0, description="data_aware: loss scale of the weights; large = FedAvg"
    )
    data_aware_weighting: Literal["size_loss", "exp_one_minus_loss"] = Field(
        "size_loss",
        description="data_aware: size_loss = n·exp(-(L - min L)/T); exp_one_minus_loss = "
        "Fed-MedLoRA+'s exp(1 - L)",
    )
    server_momentum: float = Field(
        0.7, ge=0.0, lt=1.0, description="fedavgm: momentum of the server's step (beta)"
    )
    server_lr: float = Field(0.1, gt=0.0, description="adaptive strategies: server step (eta)")
    server_tau: float = Field(1e-3, gt=0.0, description="adaptive strategies: adaptivity (tau)")
    num_malicious: int = Field(
        1, ge=0, description="krum/multikrum/bulyan: hospitals assumed malicious (f)"
    )
    multikrum_select: int | None = Field(
        None, ge=1, description="multikrum: updates averaged; None: sampled hospitals - f"
    )
    trim_fraction: float = Field(
        0.2, ge=0.0, lt=0.5, description="trimmed_mean: share cut at each end per coordinate"
    )
    screen_updates: bool = Field(True, description="reject NaN/Inf, misshapen, outsized updates")
    screen_norm_factor: float = Field(
        10.0, gt=1.0, description="reject an update whose norm exceeds this x the others' median"
    )
    rounds: int = Field(10, ge=1)
    local_epochs: int = Field(1, ge=1)
    fraction_train: float = Field(1.0, gt=0.0, le=1.0)
    min_train_nodes: int | None = Field(None, ge=1)
    round_timeout_s: float = Field(600.0, gt=0.0)
    startup_timeout_s: float = Field(120.0, gt=0.0)
    run_timeout_s: float = Field(3600.0, gt=0.0)
    port: int = Field(0, ge=0, le=65535, description="SuperLink port; 0 picks a free one")
    poll_interval_s: float = Field(0.1, gt=0.0, le=5.0)
    clientapp_launcher: Literal["warm", "subprocess"] = "warm"
    supernode_poll_s: float | None = Field(
        0.2, gt=0.0, le=3.0, description="cap on the SuperNode's idle waits; None: Flower's 3 s"
    )
    launcher: Literal["local", "kubernetes", "docker"] = "local"
    insecure: bool = Field(
        False, description="local/docker launcher: plaintext, no node auth (warned)"
    )
    supernode_auth: bool = Field(
        True, description="local/docker launcher: only enrolled SuperNodes"
    )
    resume: bool = Field(True, description="a rerun goes on from the last completed round")
    secure_aggregation: SecureAggregationSection = SecureAggregationSection()

    @model_validator(mode="after")
    def _secure_aggregation_fits(self) -> TrainFederatedSection:
        if not self.secure_aggregation.enabled:
            return self
        spec = STRATEGIES[self.strategy]
        if not spec.secure_aggregation:
            raise ValueError(
                f"train_federated.strategy={self.strategy} cannot run with "
                "secure_aggregation.enabled=true: under SecAgg+ the server sees only the sum "
                "of the hospitals' updates, and "
                + (
                    f"{self.strategy} needs each hospital's update to rank, trim or take "
                    "medians of them"
                    if spec.robust
                    else f"{self.strategy} is not implemented on the secure path"
                )
                + f"; use one of {', '.join(SECAGG_STRATEGIES)}"
            )
        if self.screen_updates:
            raise ValueError(
                "train_federated.screen_updates=true cannot run with "
                "secure_aggregation.enabled=true: screening checks each hospital's update, "
                "which SecAgg+ hides from the server; set screen_updates: false to accept that"
            )
        return self
