"""The server side of a federated run: strategy, per-round records, checkpoints, final model.

Runs inside the ServerApp process that the SuperLink starts. Everything it needs arrives in the
Flower run config (the validated PrivFed config as JSON, the absolute output folder), which the
launcher derives from params.yaml. The server never opens a hospital's data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)

from privfed.checkpoints import save_model
from privfed.config import PrivFedConfig, resolved_config
from privfed.federated import RUN_RESULT_FILE
from privfed.federated.client import BYTE_COUNTS, CONFIG_KEY, TIMING_PREFIX
from privfed.federated.data_aware import DataAwareFedAvg
from privfed.federated.grid import FastPollGrid, wait_for_nodes
from privfed.federated.resume import ResumeState, ResumeStore, restore_strategy, strategy_state
from privfed.federated.scaffold import Scaffold
from privfed.federated.screening import screen_updates
from privfed.io import write_json
from privfed.tasks import get_task

__all__ = [
    "RoundRecorder",
    "roll_call",
    "make_strategy",
    "min_hospitals_for",
    "min_train_nodes",
    "run_server",
    "sum_statistics",
]

log = logging.getLogger(__name__)


def _unprefix(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def _hospital(reply: Message, grid: FastPollGrid | None) -> str:
    """The hospital a reply comes from: its node's roll-call name, else what the reply says."""
    node = reply.metadata.src_node_id
    if grid is not None and node in grid.names:
        return grid.names[node]
    if not reply.has_error() and "ident" in reply.content.config_records:
        return str(reply.content["ident"]["hospital"])
    return f"node {node}"


class RoundRecorder:
    """Collects per-hospital metrics each round, screens updates, checkpoints the aggregate.

    Train replies of round r carry the validation metrics of the global model they received,
    i.e. of the aggregate after round r-1; ``rounds[r]['val']`` is therefore filled one round
    late, and the final round's by an explicit evaluation after training.
    """

    def __init__(
        self,
        *,
        out_dir: Path,
        task_name: str,
        primary_metric: str,
        num_rounds: int,
        min_replies: int,
        screen_norm_factor: float | None = None,
        fixed: frozenset[str] = frozenset(),
        grid: FastPollGrid | None = None,
        round_timeout_s: float = math.inf,
    ) -> None:
        self.out_dir = out_dir
        self.task_name = task_name
        self.primary_metric = primary_metric
        self.min_replies = min_replies
        self.screen_norm_factor = screen_norm_factor
        #: tensors no honest update changes (the model's buffers)
        self.fixed = fixed
        self.grid = grid
        self.round_timeout_s = round_timeout_s
        self.rounds: list[dict[str, Any]] = [
            {
                "round": r,
                "train": {},
                "val_per_hospital": {},
                "val": {},
                "rejected": {},
                "dropouts": {},
                "failed": {},
            }
            for r in range(num_rounds + 1)
        ]
        #: each hospital's accountant history as reported since this run (re)started, and
        #: the history checkpointed before a crash (see :mod:`privfed.federated.resume`)
        self.dp_history: dict[str, list] = {}
        self.dp_before: dict[str, list] = {}
        #: rounds completed before a resume: Flower counts from 1 again, the recorder does not
        self.offset = 0
        #: the last round whose aggregate is recorded (counted from round 1 of the run)
        self.completed = 0
        #: the initial model (names, shapes, dtypes every update must have) and the global
        #: model of the round in progress (what updates are measured against)
        self.template: dict[str, np.ndarray] | None = None
        self.current: dict[str, np.ndarray] | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._rejected: dict[str, str] = {}
        self._dropouts: dict[str, str] = {}
        self._failed: dict[str, str] = {}
        self._sampled: set[int] = set()
        self._t_round = time.monotonic()
        self._aggregate_s = 0.0

    def guard(self, aggregate: Any) -> Any:
        """Wrap a strategy's ``aggregate_train``: record and screen replies, time aggregation."""

        def wrapper(server_round: int, replies: Any) -> Any:
            kept = self.receive(server_round + self.offset, list(replies))
            t0 = time.perf_counter()
            try:
                return aggregate(server_round + self.offset, kept)
            finally:
                self._aggregate_s += time.perf_counter() - t0

        return wrapper

    def guard_configure(self, configure: Any) -> Any:
        """Wrap ``configure_train``: a bounded wait for enough hospitals, then note who is asked.

        Flower's node sampling waits for ``min_available_nodes`` without a bound; waiting here
        first, with ``round_timeout_s``, turns a federation that shrank below the minimum into
        a clear error instead of a hang.
        """

        def wrapper(server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            if self.grid is not None:
                wait_for_nodes(self.grid, self.min_replies, timeout=self.round_timeout_s)
            # the strategy (and so each hospital's ``server-round``) sees the run's own round
            messages = list(configure(server_round + self.offset, arrays, config, grid))
            self._sampled = {m.metadata.dst_node_id for m in messages}
            return messages

        return wrapper

    def note_missing(self, server_round: int, replies: list[Message]) -> None:
        """Record (and stop sampling) hospitals that did not reply; record error replies."""
        for reply in replies:
            if reply.has_error():
                self.record_failure(
                    server_round, _hospital(reply, self.grid), str(reply.error.reason)
                )
        missing = self._sampled - {r.metadata.src_node_id for r in replies}
        for node in sorted(missing):
            self.record_dropout(server_round, node)
        self._sampled = set()

    def record_failure(self, server_round: int, hospital: str, reason: str) -> None:
        """A hospital's ClientApp answered with an error."""
        self._failed[hospital] = reason
        log.warning("round %d: %s failed: %s", server_round, hospital, reason)

    def record_dropout(self, server_round: int, node: int) -> None:
        """A sampled node did not reply in time: record it and stop sampling it."""
        hospital = self.grid.hospital(node) if self.grid else f"node {node}"
        self._dropouts[hospital] = (
            f"no reply within train_federated.round_timeout_s={self.round_timeout_s:g}"
        )
        if self.grid is not None:
            self.grid.drop(node)
        log.warning(
            "round %d: %s dropped out (no reply within %g s); the round goes on without it, "
            "and later rounds do not sample it",
            server_round,
            hospital,
            self.round_timeout_s,
        )

    def keep(self, hospital: str, metrics: dict[str, Any], dp_history: str | None) -> None:
        """Hold a hospital's train metrics (and DP history) for the round's row."""
        self._pending.append((hospital, dict(metrics)))
        if dp_history is not None:
            self.dp_history[hospital] = json.loads(dp_history)

    def add_aggregate_seconds(self, seconds: float) -> None:
        """Server-side aggregation time of the round in progress (the secure path's)."""
        self._aggregate_s += seconds

    def settle_final(self, sent: list[Message], replies: list[Message]) -> dict[str, Any]:
        """Record who missed or failed the final evaluation in the last round's row."""
        last = len(self.rounds) - 1
        self._sampled = {m.metadata.dst_node_id for m in sent}
        self.note_missing(last, replies)
        row = self.rounds[last]
        row["dropouts"].update(self._dropouts)
        row["failed"].update(self._failed)
        self._dropouts, self._failed = {}, {}
        return row

    def receive(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Keep every hospital's row, then drop the updates screening rejects (logged).

        Replies come back in hospital order, not arrival order: float sums depend on their
        order, and averaging in arrival order made identical runs drift apart after a few rounds.
        """
        self.note_missing(server_round, replies)
        replies = sorted(replies, key=lambda r: _hospital(r, self.grid))
        ok = [r for r in replies if not r.has_error()]
        for reply in ok:
            ident = reply.content["ident"]
            self.keep(
                _hospital(reply, self.grid),
                dict(reply.content["metrics"]),
                str(ident["dp_history"]) if "dp_history" in ident else None,
            )
        if self.screen_norm_factor is None or self.template is None or self.current is None:
            return replies
        reference = {k: self.current[k].astype(v.dtype) for k, v in self.template.items()}
        screened = screen_updates(
            [_numpy(r.content["arrays"]) for r in ok],
            [float(r.content["metrics"].get("num-examples", math.nan)) for r in ok],
            reference,
            norm_factor=self.screen_norm_factor,
            fixed=self.fixed,
        )
        for index, reason in sorted(screened.rejected.items()):
            hospital = _hospital(ok[index], self.grid)
            self._rejected[hospital] = reason
            log.warning("round %d: rejected the update of %s: %s", server_round, hospital, reason)
        if not screened.accepted:
            log.warning("round %d: no update passed screening; the model stays", server_round)
        return [r for r in replies if r.has_error()] + [ok[i] for i in screened.accepted]

    def resume(self, state: ResumeState) -> None:
        """Take over the rows and DP histories of the rounds a crashed run completed."""
        self.offset = self.completed = state.round
        self.rounds[: state.round + 1] = state.rows
        self.dp_before = {h: list(v) for h, v in state.dp_history.items()}

    def snapshot(self, arrays: ArrayRecord, strategy: dict[str, Any]) -> ResumeState:
        """What a rerun needs to go on after the last completed round (``arrays``)."""
        return ResumeState(
            round=self.completed,
            arrays=arrays.to_torch_state_dict(),
            rows=self.rounds[: self.completed + 1],
            dp_history=self.full_dp_history(),
            strategy=strategy,
        )

    def full_dp_history(self) -> dict[str, list]:
        """Each hospital's steps since round 1: before a crash, then since the restart."""
        names = set(self.dp_before) | set(self.dp_history)
        return {h: self.dp_before.get(h, []) + self.dp_history.get(h, []) for h in sorted(names)}

    def record_val(self, round_index: int, hospital: str, metrics: dict[str, Any]) -> None:
        row = self.rounds[round_index]
        row["val_per_hospital"][hospital] = _unprefix(metrics, "val_")
        per = row["val_per_hospital"].values()
        keys = set().union(*(m.keys() for m in per))
        row["val"] = {k: float(np.nanmean([m.get(k, math.nan) for m in per])) for k in keys}

    def on_round_end(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn``: called with the aggregate after each round (and with round 0)."""
        now = time.monotonic()
        self.current = _numpy(arrays)
        if server_round == 0:
            self.template = self.current
            self._t_round = now
            return None
        server_round += self.offset
        self.completed = server_round
        if len(self._pending) < self.min_replies:
            arrived = sorted(h for h, _ in self._pending)
            raise RuntimeError(
                f"round {server_round}: only {len(self._pending)} hospital update(s) arrived "
                f"({', '.join(arrived) or 'none'}), fewer than the {self.min_replies} required "
                "(train_federated.min_train_nodes); see the SuperNode and executor logs"
            )
        row = self.rounds[server_round]
        row["seconds"] = now - self._t_round
        row["aggregate_seconds"] = self._aggregate_s
        row["rejected"], self._rejected = self._rejected, {}
        row["dropouts"], self._dropouts = self._dropouts, {}
        row["failed"], self._failed = self._failed, {}
        self._t_round, self._aggregate_s = now, 0.0
        for hospital, metrics in self._pending:
            row["train"][hospital] = {
                "train_loss": float(metrics["train_loss"]),
                "num_examples": int(metrics["num-examples"]),
                "seconds": _unprefix(metrics, TIMING_PREFIX),
            }
            for key in BYTE_COUNTS:  # serialized message sizes (privfed.federated.client)
                if key in metrics:
                    row["train"][hospital][key] = int(metrics[key])
            if "secagg-clipped" in metrics:  # values SecAgg+ clipped to ±clipping_range
                row["train"][hospital]["secagg_clipped"] = int(metrics["secagg-clipped"])
            self.record_val(server_round - 1, hospital, metrics)
        n = sum(v["num_examples"] for v in row["train"].values())
        row["train_loss"] = sum(
            v["train_loss"] * v["num_examples"] for v in row["train"].values()
        ) / max(n, 1)
        self._pending = []
        save_model(
            self.out_dir / "checkpoints" / f"round_{server_round:03d}.pt",
            arrays.to_torch_state_dict(),
            task=self.task_name,
            meta={"round": server_round},
        )
        prev = self.rounds[server_round - 1]["val"].get(self.primary_metric, math.nan)
        log.info(
            "round %d done in %.2f s: train loss %.4f; val %s of round-%d model %.4f",
            server_round,
            row["seconds"],
            row["train_loss"],
            self.primary_metric,
            server_round - 1,
            prev,
        )
        return None


def min_train_nodes(cfg: PrivFedConfig, num_nodes: int) -> int:
    """Hospitals that must return an update for a round to count (params or the sampled share)."""
    fed = cfg.train_federated
    return fed.min_train_nodes or max(1, math.ceil(fed.fraction_train * num_nodes))


def min_hospitals_for(strategy: str, num_malicious: int) -> int:
    """Replies per round a robust strategy needs to tolerate ``num_malicious`` hospitals."""
    if strategy in ("krum", "multikrum"):
        return 2 * num_malicious + 3  # Blanchard et al.: n > 2f + 2
    if strategy == "bulyan":
        return 4 * num_malicious + 3  # El Mhamdi et al.: n >= 4f + 3
    if strategy == "trimmed_mean":
        return 3  # a trimmed mean of fewer is the mean of one or two
    if strategy == "median":
        return 3
    return 1


def fixed_tensors(model: torch.nn.Module) -> frozenset[str]:
    """Names of the buffers that travel (those in the state dict): no honest update changes them.

    A buffer left out of the state dict (non-persistent, or dropped by the model's own
    state-dict hook) is never sent, so there is nothing to screen.
    """
    sent = set(model.state_dict())
    return frozenset(name for name, _ in model.named_buffers() if name in sent)


def make_strategy(
    cfg: PrivFedConfig, num_nodes: int, *, parameter_names: Sequence[str] | None = None
) -> FedAvg:
    """The Flower strategy ``train_federated.strategy`` names, with PrivFed's bounded waits.

    ``parameter_names`` (the model's trainable arrays) are the ones SCAFFOLD keeps control
    variates for; other strategies ignore them.
    """
    fed = cfg.train_federated
    min_train = min_train_nodes(cfg, num_nodes)
    per_round = max(int(num_nodes * fed.fraction_train), min_train)
    needed = min_hospitals_for(fed.strategy, fed.num_malicious)
    if per_round < needed:
        raise ValueError(
            f"train_federated.strategy={fed.strategy} with num_malicious={fed.num_malicious} "
            f"needs at least {needed} hospitals per round; this run samples {per_round} of "
            f"{num_nodes}"
        )
    common = dict(
        fraction_train=fed.fraction_train,
        fraction_evaluate=0.0,  # validation rides on the next round's train message
        min_train_nodes=min_train,
        min_evaluate_nodes=0,
        # not num_nodes: Flower waits for min_available_nodes without a bound, so a hospital
        # that drops out mid-run would stall every later round
        min_available_nodes=min_train,
    )
    f = fed.num_malicious
    if fed.strategy == "fedprox":
        return FedProx(proximal_mu=fed.proximal_mu, **common)
    if fed.strategy in ADAPTIVE:
        # Reddi et al.'s adaptive server optimizers: the averaged update is a pseudo-gradient
        # that Adam/Yogi/Adagrad applies with step eta (server_lr). Flower's defaults for the
        # moments (beta_1 0.9, beta_2 0.99) stay; eta_l is only recorded by Flower.
        return ADAPTIVE[fed.strategy](
            eta=fed.server_lr, eta_l=cfg.train.lr, tau=fed.server_tau, **common
        )
    if fed.strategy == "krum":
        return Krum(num_malicious_nodes=f, **common)
    if fed.strategy == "multikrum":
        select = fed.multikrum_select or per_round - f
        return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=select, **common)
    if fed.strategy == "bulyan":
        return Bulyan(num_malicious_nodes=f, **common)
    if fed.strategy == "trimmed_mean":
        return FedTrimmedAvg(beta=fed.trim_fraction, **common)
    if fed.strategy == "median":
        return FedMedian(**common)
    if fed.strategy == "scaffold":
        return Scaffold(
            num_hospitals=num_nodes,
            server_lr=fed.scaffold_server_lr,
            control_keys=parameter_names,
            **common,
        )
    if fed.strategy == "data_aware":
        return DataAwareFedAvg(temperature=fed.data_aware_temperature, **common)
    return FedAvg(**common)


#: ``train_federated.strategy`` names of the adaptive server optimizers.
ADAPTIVE = {"fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}


@dataclass(frozen=True)
class RollCall:
    """Who is connected: Flower node id -> hospital, and the summed statistics if asked."""

    names: dict[int, str]
    statistics: dict[str, np.ndarray] | None
    statistics_from: list[str]


def roll_call(
    grid: FastPollGrid, cfg: PrivFedConfig, *, num_nodes: int, timeout: float, statistics: bool
) -> RollCall:
    """Ask every connected node for its hospital's name (and additive statistics).

    All hospitals must answer. The names let every later log line, dropout and error name the
    hospital instead of a node id. The statistics fix the model's normalizers, so a missing
    hospital would silently change them. Each hospital computes them on its own training
    split and replies only those arrays; the server never sees a row.
    """
    config = ConfigRecord(
        {CONFIG_KEY: json.dumps(cfg.model_dump(mode="json")), "statistics": statistics}
    )
    messages = [
        Message(
            content=RecordDict({"config": config}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in grid.get_node_ids()
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    # a node killed in a past run is still listed until its heartbeat expires; whether the
    # SuperLink then answers for it with NODE_UNAVAILABLE or says nothing is a race: both
    # mean the same, a node that is gone (left out below), not a hospital that failed
    gone = [r for r in replies if r.has_error() and r.error.code == ErrorCode.NODE_UNAVAILABLE]
    errors = [r.error.reason for r in replies if r.has_error() and r not in gone]
    replies = [r for r in replies if not r.has_error()]
    if errors or len(replies) < num_nodes:
        raise RuntimeError(
            f"roll call: {len(replies)} of {num_nodes} hospitals answered "
            f"within {timeout} s (train_federated.round_timeout_s)"
            + (f"; errors: {errors}" if errors else "")
        )
    names = {r.metadata.src_node_id: str(r.content["ident"]["hospital"]) for r in replies}
    for message in messages:  # listed by the SuperLink but gone: e.g. killed in a past run
        if message.metadata.dst_node_id not in names:
            grid.drop(message.metadata.dst_node_id)
            log.warning(
                "roll call: node %d did not answer; left out of this run",
                message.metadata.dst_node_id,
            )
    if statistics:
        total, hospitals = sum_statistics([r.content for r in replies])
        return RollCall(names=names, statistics=total, statistics_from=hospitals)
    return RollCall(names=names, statistics=None, statistics_from=[])


def sum_statistics(contents: list[RecordDict]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Elementwise sum of the hospitals' statistics replies, and the hospitals summed."""
    total: dict[str, np.ndarray] = {}
    hospitals = []
    for content in contents:
        hospitals.append(str(content["ident"]["hospital"]))
        arrays = content["statistics"].to_torch_state_dict()
        for key, value in arrays.items():
            part = value.numpy().astype(np.float64)
            if key in total and total[key].shape != part.shape:
                raise RuntimeError(
                    f"federated statistics: {hospitals[-1]} sent {key!r} with shape "
                    f"{part.shape}, others {total[key].shape}"
                )
            total[key] = total.get(key, 0.0) + part
    log.info("federated statistics summed over %s", ", ".join(sorted(hospitals)))
    return total, sorted(hospitals)


def _final_evaluation(
    grid: FastPollGrid, recorder: RoundRecorder, arrays: ArrayRecord, config: ConfigRecord
) -> dict[str, dict[str, Any]]:
    """Score the final model at every hospital still in the run; record who did not answer.

    At least ``min_train_nodes`` hospitals must answer. Each reply also carries the node's
    complete DP history (a train reply lost on the way cannot hide spent privacy).
    """
    messages = [
        Message(
            content=RecordDict({"arrays": arrays, "config": config}),
            dst_node_id=node,
            message_type=MessageType.EVALUATE,
        )
        for node in grid.get_node_ids()
    ]
    replies = list(grid.send_and_receive(messages, timeout=recorder.round_timeout_s))
    row = recorder.settle_final(messages, replies)
    scores: dict[str, dict[str, Any]] = {}
    for reply in sorted(replies, key=lambda r: _hospital(r, grid)):  # means sum in one order
        if reply.has_error():
            continue
        hospital = _hospital(reply, grid)
        scores[hospital] = dict(reply.content["metrics"])
        ident = reply.content["ident"]
        if "dp_history" in ident:
            recorder.dp_history[hospital] = json.loads(str(ident["dp_history"]))
    if len(scores) < recorder.min_replies:
        raise RuntimeError(
            f"final evaluation: only {len(scores)} hospital(s) answered "
            f"({', '.join(sorted(scores)) or 'none'}) within train_federated.round_timeout_s="
            f"{recorder.round_timeout_s:g}; {recorder.min_replies} required "
            f"(train_federated.min_train_nodes); failed: {row['failed'] or 'none'}"
        )
    return scores


def exit_when_orphaned(poll_s: float = 0.5) -> None:
    """Hard-exit this ServerApp process if the process that started it dies.

    When a stage is killed outright, the SuperExec that started this process is gone and the
    SuperLink with it; Flower's own parent monitor then raises SIGINT, and the shutdown that
    follows retries the dead SuperLink without end. Nobody can use this process any more, so
    it ends at once (the resume state on disk is complete up to the last round).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the process that started this ServerApp (pid %d) is gone; exiting", parent)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def run_server(grid: Grid, run_config: dict[str, Any]) -> dict[str, Any]:
    cfg = resolved_config(json.loads(str(run_config[CONFIG_KEY])))
    out_dir = Path(str(run_config["out-dir"]))
    use_dp = bool(run_config.get("dp", False))
    num_nodes = int(run_config["num-nodes"])
    fed = cfg.train_federated
    task = get_task(cfg.base.task, cfg)
    grid = FastPollGrid(grid, poll_interval=fed.poll_interval_s)
    t0 = time.monotonic()
    wait_for_nodes(grid, num_nodes, timeout=fed.startup_timeout_s)
    log.info(
        "%d hospitals connected after %.1f s; %d rounds of %s%s",
        num_nodes,
        time.monotonic() - t0,
        fed.rounds,
        fed.strategy,
        " with DP-SGD" if use_dp else "",
    )
    roll = roll_call(
        grid,
        cfg,
        num_nodes=num_nodes,
        timeout=fed.round_timeout_s,
        statistics=task.uses_statistics,
    )
    grid.names = roll.names
    torch.manual_seed(cfg.base.seed)
    initial = task.initial_model(roll.statistics)
    recorder = RoundRecorder(
        out_dir=out_dir,
        task_name=task.name,
        primary_metric=task.primary_metric,
        num_rounds=fed.rounds,
        min_replies=min_train_nodes(cfg, num_nodes),
        screen_norm_factor=fed.screen_norm_factor if fed.screen_updates else None,
        fixed=fixed_tensors(initial),
        grid=grid,
        round_timeout_s=fed.round_timeout_s,
    )
    secure = fed.secure_aggregation.enabled
    strategy = (
        None
        if secure
        else make_strategy(
            cfg,
            num_nodes,
            parameter_names=[n for n, p in initial.named_parameters() if p.requires_grad],
        )
    )
    if strategy is not None:
        strategy.aggregate_train = recorder.guard(strategy.aggregate_train)  # type: ignore[method-assign]
        strategy.configure_train = recorder.guard_configure(strategy.configure_train)  # type: ignore[method-assign]
    store = (
        ResumeStore(Path(str(run_config["resume-dir"])), str(run_config["resume-key"]))
        if "resume-dir" in run_config
        else None
    )
    arrays = ArrayRecord(initial.state_dict())
    resumed = store.load() if store else None
    if resumed is not None:
        recorder.resume(resumed)
        if strategy is not None:
            restore_strategy(strategy, resumed.strategy)
        arrays = ArrayRecord(resumed.arrays)
        log.info(
            "resuming from the checkpoint of round %d of %d (%s): %d round(s) left; the "
            "completed rounds are not trained again and their DP steps are counted once",
            resumed.round,
            fed.rounds,
            store.path if store else None,
            fed.rounds - resumed.round,
        )

    def round_end(server_round: int, aggregate: ArrayRecord) -> MetricRecord | None:
        recorder.on_round_end(server_round, aggregate)
        if store is not None and server_round > 0:
            store.save(recorder.snapshot(aggregate, strategy_state(strategy)))
        return None

    config = ConfigRecord({CONFIG_KEY: json.dumps(cfg.model_dump(mode="json")), "dp": use_dp})
    t_train = time.monotonic()
    if recorder.offset >= fed.rounds:
        pass  # every round completed before a crash: only the final evaluation is left
    elif secure:
        # Flower's SecAgg+ runs only on its legacy workflow API; that seam lives in one module.
        from privfed.federated.secagg import train_secure

        log.warning(
            "secure aggregation (SecAgg+) is on: the server sees only the sum of the "
            "hospitals' updates, so update screening cannot run (screen_updates=false)"
        )
        arrays = train_secure(
            grid,
            cfg,
            initial=arrays,
            recorder=recorder,
            fit_config=dict(config),
            num_nodes=num_nodes,
            round_end=round_end,
        )
    else:
        assert strategy is not None
        arrays = strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=fed.rounds - recorder.offset,
            timeout=fed.round_timeout_s,
            train_config=config,
            evaluate_fn=round_end,
        ).arrays
    training_seconds = time.monotonic() - t_train
    for hospital, metrics in _final_evaluation(grid, recorder, arrays, config).items():
        recorder.record_val(fed.rounds, hospital, metrics)
    save_model(
        out_dir / "model.pt",
        arrays.to_torch_state_dict(),
        task=task.name,
        meta={
            "rounds": fed.rounds,
            "dp": use_dp,
            "strategy": fed.strategy,
            "secure_aggregation": secure,
        },
    )
    round_seconds = [r["seconds"] for r in recorder.rounds[1:] if "seconds" in r]
    summary = {
        "rounds": recorder.rounds,
        "rounds_completed": len(round_seconds),
        "dp": use_dp,
        "dp_history": recorder.full_dp_history(),
        # the round a crashed run had completed when this one took over (None: no crash)
        "resumed_from_round": resumed.round if resumed else None,
        "strategy": fed.strategy,
        # SecAgg+: the server learned only sums; per-round protocol records in rounds[r].secagg
        "secure_aggregation": secure,
        "update_screening": bool(recorder.screen_norm_factor is not None),
        "statistics_from": roll.statistics_from,
        # hospital -> the round it dropped out in
        "dropouts": {h: row["round"] for row in recorder.rounds for h in row["dropouts"]},
        "seconds": {
            "total": time.monotonic() - t0,
            "training": training_seconds,
            "per_round": round_seconds,
            "per_round_median": float(np.median(round_seconds)) if round_seconds else None,
        },
    }
    write_json(summary, out_dir / RUN_RESULT_FILE)
    log.info(
        "federated run finished: %d rounds, median %.2f s per round, final val %s=%.4f",
        len(round_seconds),
        summary["seconds"]["per_round_median"] or math.nan,
        task.primary_metric,
        recorder.rounds[-1]["val"].get(task.primary_metric, math.nan),
    )
    return summary
