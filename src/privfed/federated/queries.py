"""The server's questions to every hospital outside the training rounds.

Before the first round, the roll call learns which hospital each Flower node is (so logs,
dropouts and errors name hospitals) and, for tasks that need them, sums the hospitals'
additive statistics. After the last round, the final evaluation scores the final model at
every hospital still in the run. Both go to all hospitals, not a sample.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from privfed.config import PrivFedConfig
from privfed.federated.client import CONFIG_KEY
from privfed.federated.grid import FastPollGrid
from privfed.federated.recorder import RoundRecorder, hospital_of

__all__ = ["RollCall", "final_evaluation", "roll_call", "sum_statistics"]

log = logging.getLogger(__name__)


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
    names = {r.metadata.src_node_id: str(r.content["ident"]["hospital"]) for r in replies}
    enrolled = grid.enrolled or {}
    if errors or len(replies) < num_nodes:
        raise RuntimeError(
            f"roll call: {len(replies)} of {num_nodes} hospitals answered "
            f"within {timeout} s (train_federated.round_timeout_s)"
            + _silent(enrolled, names, gone)
            + (f"; errors: {errors}" if errors else "")
        )
    impostors = {n: name for n, name in names.items() if n in enrolled and enrolled[n] != name}
    if impostors:
        raise RuntimeError(
            "roll call: "
            + "; ".join(
                f"node {n} holds the key enrolled for {enrolled[n]!r} but says it is {name!r}"
                for n, name in sorted(impostors.items())
            )
        )
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


def _silent(enrolled: dict[int, str], names: dict[int, str], gone: list[Message]) -> str:
    """Which enrolled hospitals did not answer, and how many nodes the SuperLink says are gone."""
    silent = [
        f"{hospital} (node {node})"
        for node, hospital in sorted(enrolled.items(), key=lambda item: item[1])
        if hospital not in names.values()
    ]
    text = f"; no answer from {', '.join(silent)}" if silent else ""
    if gone:
        text += f"; the SuperLink reports {len(gone)} node(s) unavailable (SuperNode gone)"
    return text + ("; see those hospitals' SuperNode and executor logs" if text else "")


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


def final_evaluation(
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
    for reply in sorted(replies, key=lambda r: hospital_of(r, grid)):  # means sum in one order
        if reply.has_error():
            continue
        hospital = hospital_of(reply, grid)
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
