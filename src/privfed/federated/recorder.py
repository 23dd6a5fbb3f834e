"""The server's record of a run: each round's per-hospital row, screening, checkpoints.

:class:`RoundRecorder` is what both training paths (the Message API strategy behind
:class:`~privfed.federated.recorded.RecordedStrategy`, and SecAgg+'s legacy workflow) report
to. It keeps one row per round (train metrics, validation, rejections, dropouts, failures,
timings), screens the updates it is handed, and after each round writes the aggregate's
checkpoint and, when a :class:`~privfed.federated.resume.ResumeStore` is given, the state a
rerun resumes from.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.constant import ErrorCode

from privfed.checkpoints import save_model
from privfed.federated import LIVE_FILE
from privfed.federated.client import BYTE_COUNTS, LOSS_PREFIX, TIMING_PREFIX
from privfed.federated.grid import FastPollGrid
from privfed.federated.resume import ResumeState, ResumeStore
from privfed.federated.screening import screen_updates
from privfed.io import write_json
from privfed.privacy import history_steps

__all__ = ["RoundRecorder", "hospital_of"]

log = logging.getLogger(__name__)


def _unprefix(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _example_weighted(values: list[tuple[float, dict[str, Any]]]) -> float:
    """Mean of ``(value, hospital's train row)`` pairs, weighted by the rows' ``num_examples``."""
    n = sum(row["num_examples"] for _, row in values)
    return sum(value * row["num_examples"] for value, row in values) / max(n, 1)


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def hospital_of(reply: Message, grid: FastPollGrid | None) -> str:
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
        store: ResumeStore | None = None,
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
        #: where the state after each completed round goes for a rerun (None: no resume)
        self.store = store
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
        #: the round whose global model the run keeps (train.selection), once training ended
        self.selected: int | None = None
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

    def note_sampled(self, messages: Iterable[Message]) -> None:
        """The nodes asked this round: those that do not reply are recorded as dropouts."""
        self._sampled = {m.metadata.dst_node_id for m in messages}

    def note_missing(self, server_round: int, replies: list[Message]) -> None:
        """Record (and stop sampling) hospitals that did not reply; record error replies."""
        for reply in replies:
            if reply.has_error() and reply.error.code != ErrorCode.NODE_UNAVAILABLE:
                self.record_failure(
                    server_round, hospital_of(reply, self.grid), str(reply.error.reason)
                )
        # a node the SuperLink reports unavailable died: the same as one that stays silent
        answered = {
            r.metadata.src_node_id
            for r in replies
            if not (r.has_error() and r.error.code == ErrorCode.NODE_UNAVAILABLE)
        }
        missing = self._sampled - answered
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
            if self.store is not None:  # spent now, even if the round never finishes
                self.store.save_spent(self.full_dp_history())

    def add_aggregate_seconds(self, seconds: float) -> None:
        """Server-side aggregation time of the round in progress (the secure path's)."""
        self._aggregate_s += seconds

    def settle_final(self, sent: list[Message], replies: list[Message]) -> dict[str, Any]:
        """Record who missed or failed the final evaluation in the last round's row."""
        last = len(self.rounds) - 1
        self.note_sampled(sent)
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
        replies = sorted(replies, key=lambda r: hospital_of(r, self.grid))
        ok = [r for r in replies if not r.has_error()]
        for reply in ok:
            ident = reply.content["ident"]
            self.keep(
                hospital_of(reply, self.grid),
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
            hospital = hospital_of(ok[index], self.grid)
            self._rejected[hospital] = reason
            log.warning("round %d: rejected the update of %s: %s", server_round, hospital, reason)
        if not screened.accepted:
            log.warning("round %d: no update passed screening; the model stays", server_round)
        return [r for r in replies if r.has_error()] + [ok[i] for i in screened.accepted]

    def resume(self, state: ResumeState) -> None:
        """Take over the rows and DP histories of the rounds a crashed run completed.

        A hospital whose update of the unfinished round reached the server before the crash
        spent those steps: its longer, spent history is the one carried on (the round is
        trained again, and both passes count).
        """
        self.offset = self.completed = state.round
        self.rounds[: state.round + 1] = state.rows
        self.dp_before = {h: list(v) for h, v in state.dp_history.items()}
        spent = self.store.load_spent() if self.store is not None else {}
        for hospital, history in sorted(spent.items()):
            extra = history_steps(history) - history_steps(self.dp_before.get(hospital, []))
            if extra > 0:
                self.dp_before[hospital] = list(history)
                log.warning(
                    "%s: %d DP-SGD step(s) of unfinished round %d reached the server before "
                    "the crash; counted as spent",
                    hospital,
                    extra,
                    state.round + 1,
                )

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

    def on_round_end(
        self,
        server_round: int,
        arrays: ArrayRecord,
        *,
        strategy_state: Mapping[str, dict[str, np.ndarray]] | None = None,
    ) -> MetricRecord | None:
        """``evaluate_fn``: called with the aggregate after each round (and with round 0).

        Completes the round's row and writes the aggregate's checkpoint; with a ``store``,
        also the resume state, which carries ``strategy_state`` (e.g. an adaptive
        optimizer's moments) so that a rerun's strategy goes on where this one stopped.
        """
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
        if self._failed:  # an error is a bug or bad data to fix, not a dropout to train around
            raise RuntimeError(
                f"round {server_round}: "
                + "; ".join(f"{h} failed: {why}" for h, why in sorted(self._failed.items()))
                + " (a hospital that answers with an error stops the run; one that stops "
                "answering is a dropout); see its executor log"
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
            if losses := _unprefix(metrics, LOSS_PREFIX):  # a GAN's generator/discriminator
                row["train"][hospital]["losses"] = losses
            for key in BYTE_COUNTS:  # serialized message sizes (privfed.federated.client)
                if key in metrics:
                    row["train"][hospital][key] = int(metrics[key])
            if "secagg-clipped" in metrics:  # values SecAgg+ clipped to ±clipping_range
                row["train"][hospital]["secagg_clipped"] = int(metrics["secagg-clipped"])
            self.record_val(server_round - 1, hospital, metrics)
        trained = list(row["train"].values())
        row["train_loss"] = _example_weighted([(v["train_loss"], v) for v in trained])
        for name in sorted({k for v in trained for k in v.get("losses", {})}):
            row.setdefault("losses", {})[name] = _example_weighted(
                [(v["losses"][name], v) for v in trained if name in v.get("losses", {})]
            )
        self._pending = []
        checkpoint = self.out_dir / "checkpoints" / f"round_{server_round:03d}.pt"
        save_model(
            checkpoint,
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
        if self.store is not None:
            self.store.keep_checkpoint(checkpoint)
            self.store.save(self.snapshot(arrays, dict(strategy_state or {})))
        self.publish()
        return None

    def publish(self) -> None:
        """The rounds so far and the DP histories, for whoever follows the run live (the stage
        logs them to MLflow as they land: :class:`privfed.tracking.LiveRounds`)."""
        write_json(
            {
                "completed": self.completed,
                "num_rounds": len(self.rounds) - 1,
                "rounds": self.rounds[: self.completed + 1],
                "dp_history": self.full_dp_history(),
            },
            self.out_dir / LIVE_FILE,
        )
