"""SecAgg+'s server half: the training rounds on Flower's legacy workflow.

:func:`train_secure` runs the rounds left over the ServerApp's grid with Flower's
``DefaultWorkflow(SecAggPlusWorkflow)`` and a legacy FedAvg (:class:`SecureFedAvg`) that turns
the unmasked sum of the hospitals' weighted updates into FedAvg's mean
(:func:`apply_mean_update`), records every hospital's metrics in the same
:class:`~privfed.federated.recorder.RoundRecorder` as the Message API path, and keeps PrivFed's
bounded waits. :class:`AuditGrid` is the evidence: it counts the plaintext arrays that reach
the server (0 in an honest run). The arithmetic's contract: :mod:`privfed.federated.secagg`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg

from privfed.config import SECAGG_MODULUS, PrivFedConfig
from privfed.config.strategy_registry import get_strategy
from privfed.federated.grid import DelegatingGrid, FastPollGrid, wait_for_nodes
from privfed.federated.recorder import RoundRecorder
from privfed.federated.strategies import min_train_nodes

__all__ = ["AuditGrid", "SecureFedAvg", "apply_mean_update", "train_secure"]

log = logging.getLogger(__name__)


def apply_mean_update(
    current: Sequence[np.ndarray],
    unmasked_mean: Sequence[np.ndarray],
    *,
    num_examples: Sequence[float],
    max_weight: int,
) -> list[np.ndarray]:
    """The new global model from SecAgg+'s output, in the current model's dtypes.

    Flower divides the unmasked sum of the weighted updates by the number of hospitals
    summed (their factor is exactly 1 each). Multiplying by ``k x max_weight / sum(n)`` turns
    that into ``sum(n_i x update_i) / sum(n)``: FedAvg's mean update.
    """
    if len(current) != len(unmasked_mean):
        raise ValueError(f"{len(unmasked_mean)} aggregated tensors for {len(current)} in model")
    total = float(sum(num_examples))
    if total <= 0:
        raise ValueError(f"num-examples must sum to a positive number, got {num_examples}")
    scale = len(num_examples) * max_weight / total
    out = []
    for old, mean in zip(current, unmasked_mean, strict=True):
        new = np.asarray(old, dtype=np.float64) + scale * np.asarray(mean, dtype=np.float64)
        if np.issubdtype(old.dtype, np.integer):
            new = np.rint(new)
        out.append(new.astype(old.dtype).reshape(old.shape))
    return out


class AuditGrid(DelegatingGrid):
    """The grid the SecAgg+ workflow talks through: times each stage, counts what arrives.

    ``plaintext_arrays`` counts the arrays in every reply the server receives: under SecAgg+
    a hospital's update arrives only as masked integers inside the protocol's config record,
    so an honest run counts 0. That is the server-side evidence that no individual update
    reached it.
    """

    def __init__(self, inner: FastPollGrid) -> None:
        super().__init__(inner)
        self._inner: FastPollGrid = inner
        #: round -> {"stages": {stage: {...}}, "plaintext_arrays": int}
        self.rounds: dict[int, dict[str, Any]] = {}
        #: round -> node -> error reason
        self.errors: dict[int, dict[int, str]] = {}
        self.last_reply_at = time.monotonic()

    @property
    def names(self) -> dict[int, str]:
        """Flower node id -> hospital (the roll call's)."""
        return self._inner.names

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        stage, server_round = "other", 0
        if messages:
            content = messages[0].content
            if RECORD_KEY_CONFIGS in content.config_records:
                stage = str(content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "other"))
            server_round = int(messages[0].metadata.group_id or 0)
        t0 = time.monotonic()
        replies = list(self._inner.send_and_receive(messages, timeout=timeout))
        self.last_reply_at = time.monotonic()
        row = self.rounds.setdefault(server_round, {"stages": {}, "plaintext_arrays": 0})
        row["stages"][stage] = {
            "seconds": self.last_reply_at - t0,
            "sent": len(messages),
            "replies": sum(not r.has_error() for r in replies),
            "errors": sum(r.has_error() for r in replies),
        }
        for reply in replies:
            if reply.has_error():
                self.errors.setdefault(server_round, {})[reply.metadata.src_node_id] = str(
                    reply.error.reason
                )
                continue
            row["plaintext_arrays"] += sum(len(a) for a in reply.content.array_records.values())
        return replies


class SecureFedAvg(LegacyFedAvg):
    """Legacy FedAvg whose ``aggregate_fit`` receives SecAgg+'s unmasked mean update.

    It adds that update to the global model, records each hospital's metrics in the
    :class:`RoundRecorder` (as the Message API path does), and keeps PrivFed's bounded
    wait for enough hospitals before Flower samples them.
    """

    def __init__(
        self,
        *,
        recorder: RoundRecorder,
        grid: AuditGrid,
        max_weight: int,
        error_bound: Callable[[Sequence[float]], float],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder
        self.grid = grid
        self.max_weight = max_weight
        self.error_bound = error_bound
        self.current: list[np.ndarray] = []
        self._sampled: set[int] = set()

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        wait_for_nodes(self.grid, self.recorder.min_replies, timeout=self.recorder.round_timeout_s)
        self.current = parameters_to_ndarrays(parameters)
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._sampled = {proxy.node_id for proxy, _ in instructions}
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        recorder, names = self.recorder, self.grid.names
        errors = self.grid.errors.pop(server_round, {})
        # Flower counts from 1 again after a resume; the recorder's rows are the run's
        run_round = server_round + recorder.offset
        for node, reason in sorted(errors.items()):
            recorder.record_failure(run_round, names.get(node, f"node {node}"), reason)
        replied = {proxy.node_id for proxy, _ in results}
        for node in sorted(self._sampled - replied - set(errors)):
            recorder.record_dropout(run_round, node)
        counts = []
        for proxy, fitres in results:
            metrics = dict(fitres.metrics)
            claimed = str(metrics.pop("hospital", f"node {proxy.node_id}"))
            hospital = names.get(proxy.node_id, claimed)  # the roll call's name first
            history = metrics.pop("dp_history", None)
            recorder.keep(hospital, metrics, None if history is None else str(history))
            counts.append(float(metrics["num-examples"]))
        if not results:
            return None, {}
        # after unmasking, Flower puts the same aggregate into every result
        unmasked = parameters_to_ndarrays(results[0][1].parameters)
        updated = apply_mean_update(
            self.current, unmasked, num_examples=counts, max_weight=self.max_weight
        )
        audit = self.grid.rounds.setdefault(server_round, {"stages": {}, "plaintext_arrays": 0})
        audit["hospitals_summed"] = len(results)
        audit["error_bound"] = self.error_bound(counts)
        self.recorder.rounds[run_round]["secagg"] = audit
        recorder.add_aggregate_seconds(time.monotonic() - self.grid.last_reply_at)
        log.info(
            "round %d: SecAgg+ unmasked the sum of %d hospitals' updates (%d plaintext "
            "arrays received); mean update applied, error bound %.3g per value",
            run_round,
            len(results),
            audit["plaintext_arrays"],
            audit["error_bound"],
        )
        return ndarrays_to_parameters(updated), {}


def train_secure(
    grid: FastPollGrid,
    cfg: PrivFedConfig,
    *,
    initial: ArrayRecord,
    recorder: RoundRecorder,
    fit_config: Mapping[str, Any],
    num_nodes: int,
) -> ArrayRecord:
    """The rounds left of FedAvg/FedProx under SecAgg+; the final weights.

    Uses the same grid (bounded polling, dropped nodes), recorder (per-round rows; rounds a
    resumed run already has are ``recorder.offset``) and hospital training as the Message API
    path; ``recorder.on_round_end`` gets each round's aggregate (and checkpoints it).
    """
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    fed = cfg.train_federated
    secagg = fed.secure_aggregation
    if num_nodes * secagg.quantization_range >= SECAGG_MODULUS:
        raise ValueError(
            f"train_federated.secure_aggregation.quantization_range={secagg.quantization_range}"
            f" x {num_nodes} hospitals does not fit SecAgg+'s modulus 2**32"
        )
    min_train = min_train_nodes(cfg, num_nodes)
    per_round = max(int(num_nodes * fed.fraction_train), min_train)
    if per_round < 2:
        raise ValueError(
            f"secure aggregation needs at least 2 hospitals per round (a sum of one is that "
            f"hospital's update); this run samples {per_round} of {num_nodes} "
            f"(train_federated.fraction_train={fed.fraction_train}, "
            f"min_train_nodes={fed.min_train_nodes})"
        )
    state_dict = initial.to_torch_state_dict()
    names = list(state_dict)
    dtypes = {name: t.dtype for name, t in state_dict.items()}

    def to_record(ndarrays: Sequence[np.ndarray]) -> ArrayRecord:
        return ArrayRecord(
            {
                name: torch.from_numpy(np.array(a)).to(dtypes[name])
                for name, a in zip(names, ndarrays, strict=True)
            }
        )

    def evaluate_fn(server_round: int, ndarrays: list[np.ndarray], _: dict) -> None:
        recorder.on_round_end(server_round, to_record(ndarrays))
        return None

    # the hospital's duties for this strategy travel in the fit config, as on the Message API
    proximal = get_strategy(fed.strategy).hospital.proximal_term
    extra = {"proximal-mu": float(fed.proximal_mu)} if proximal else {}
    audit = AuditGrid(grid)
    strategy = SecureFedAvg(
        recorder=recorder,
        grid=audit,
        max_weight=secagg.max_weight,
        error_bound=secagg.error_bound,
        fraction_fit=fed.fraction_train,
        fraction_evaluate=0.0,  # validation rides on the next round's train message
        min_fit_clients=min_train,
        min_evaluate_clients=0,
        min_available_clients=min_train,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda r: {**fit_config, **extra, "server-round": r + recorder.offset},
        initial_parameters=ndarrays_to_parameters([t.numpy() for t in state_dict.values()]),
    )
    context = LegacyContext(
        Context(
            run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(
            num_rounds=fed.rounds - recorder.offset, round_timeout=fed.round_timeout_s
        ),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=secagg.num_shares,
            reconstruction_threshold=secagg.reconstruction_threshold,
            max_weight=float(secagg.max_weight),
            clipping_range=secagg.clipping_range,
            quantization_range=secagg.quantization_range,
            modulus_range=SECAGG_MODULUS,
            timeout=fed.round_timeout_s,
        )
    )
    log.info(
        "SecAgg+: %d rounds, clipping_range %g, quantization_range %d, max_weight %d",
        fed.rounds,
        secagg.clipping_range,
        secagg.quantization_range,
        secagg.max_weight,
    )
    workflow(audit, context)
    completed = [r for r in range(1, fed.rounds + 1) if "seconds" in recorder.rounds[r]]
    if len(completed) < fed.rounds:
        raise RuntimeError(
            f"secure aggregation halted: {len(completed)} of {fed.rounds} rounds completed "
            "(too few hospitals to unmask? see the ServerApp log)"
        )
    final = context.state.array_records[MAIN_PARAMS_RECORD]
    return to_record(
        parameters_to_ndarrays(compat.arrayrecord_to_parameters(final, keep_input=True))
    )
