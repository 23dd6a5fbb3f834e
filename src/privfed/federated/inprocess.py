"""Federated rounds in one process: the real client and strategy code without the processes.

The robustness matrix (five robust strategies x three attacks, each against a clean run)
needs dozens of runs; through SuperLink and SuperNodes each would pay Flower's process
start-up. This driver calls the same pieces a deployed run calls, in the same order:
:func:`privfed.federated.client.train_reply` per hospital (with its node config, so a red-team
``attack`` works as on a SuperNode), the Flower strategy from
:func:`privfed.federated.strategies.make_strategy` wrapped by
:class:`~privfed.federated.recorded.RecordedStrategy` (recording, screening, checkpoints).
What it leaves out is transport: serialization, sampling by the grid, timeouts.
`tests/integration/test_robust_federation.py` runs the same attack through the real processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from privfed.config import PrivFedConfig
from privfed.federated.client import CONFIG_KEY, evaluate_reply, query_reply, train_reply
from privfed.federated.queries import sum_statistics
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.server import fixed_tensors
from privfed.federated.strategies import make_strategy, min_train_nodes
from privfed.selection import kept_round_state
from privfed.tasks import get_task

__all__ = ["run_rounds"]


@contextmanager
def _serverapp_identity() -> Iterator[None]:
    """Messages read the process's run/node/task ids, which Flower sets in a ServerApp."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 0, 0, 0
    try:
        yield
    finally:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = saved


class _Nodes:
    """What a strategy's ``configure_train`` asks of Flower's Grid: the connected node ids."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def run_rounds(
    cfg: PrivFedConfig,
    hospitals: Mapping[str, Path],
    out_dir: Path,
    *,
    attacks: Mapping[str, str] | None = None,
    dp: bool = False,
) -> tuple[torch.nn.Module, RoundRecorder]:
    """Train ``cfg.train_federated.rounds`` rounds over ``hospitals`` (name -> partition dir).

    ``attacks`` maps a hospital to a red-team mode (:mod:`privfed.federated.adversary`).
    ``dp`` trains with DP-SGD as ``federated_dp`` does: each hospital keeps its run state (its
    accountant history) across rounds, as a SuperNode does; the recorder's
    :meth:`RoundRecorder.full_dp_history` holds what each hospital spent.
    Returns the final global model and the recorder (per-round rows, rejections).
    """
    with _serverapp_identity():
        return _run_rounds(cfg, hospitals, out_dir, attacks or {}, dp)


def _run_rounds(
    cfg: PrivFedConfig,
    hospitals: Mapping[str, Path],
    out_dir: Path,
    attacks: Mapping[str, str],
    dp: bool,
) -> tuple[torch.nn.Module, RoundRecorder]:
    fed = cfg.train_federated
    if fed.secure_aggregation.enabled:
        raise ValueError(
            "the in-process driver has no SecAgg+ (it needs Flower's processes): run "
            "train_federated.secure_aggregation.enabled=true through a real federation"
        )
    task = get_task(cfg.base.task, cfg)
    config = json.dumps(cfg.model_dump(mode="json"))
    nodes = {
        hospital: {"hospital": hospital, "data-path": str(path)}
        for hospital, path in sorted(hospitals.items())
    }
    statistics = None
    if task.uses_statistics:
        query = RecordDict({"config": ConfigRecord({CONFIG_KEY: config, "statistics": True})})
        statistics, _ = sum_statistics(
            [query_reply(query, node, RecordDict()) for node in nodes.values()]
        )
    torch.manual_seed(cfg.base.seed)
    model = task.initial_model(statistics)
    recorder = RoundRecorder(
        out_dir=out_dir,
        task_name=task.name,
        primary_metric=task.primary_metric,
        num_rounds=fed.rounds,
        min_replies=min_train_nodes(cfg, len(hospitals)),
        screen_norm_factor=fed.screen_norm_factor if fed.screen_updates else None,
        fixed=fixed_tensors(model),
    )
    strategy = RecordedStrategy(make_strategy(cfg, len(hospitals)), recorder)
    arrays = ArrayRecord(model.state_dict())
    strategy.end_round(0, arrays)
    by_id = dict(enumerate(nodes, start=1))
    grid = _Nodes(list(by_id))
    states = {hospital: RecordDict() for hospital in nodes}  # each node's run state
    for server_round in range(1, fed.rounds + 1):
        replies = []
        # the strategy writes its own train config (FedProx's mu, data-aware's trained-val)
        requests = strategy.configure_train(
            server_round, arrays, ConfigRecord({CONFIG_KEY: config, "dp": dp}), grid
        )
        for request in sorted(requests, key=lambda m: m.metadata.dst_node_id):
            hospital = by_id[request.metadata.dst_node_id]
            node_config: dict[str, Any] = dict(nodes[hospital])
            if hospital in attacks:
                node_config["attack"] = attacks[hospital]
            content = train_reply(request.content, node_config, states[hospital])
            replies.append(Message(content=content, reply_to=request))
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        strategy.end_round(server_round, arrays)
    # the final model's validation scores, then the round train.selection keeps (as a
    # deployed server does: privfed.federated.queries.final_evaluation)
    evaluate = RecordDict({"arrays": arrays, "config": ConfigRecord({CONFIG_KEY: config})})
    for hospital, node in nodes.items():
        reply = evaluate_reply(evaluate, node, states[hospital])
        recorder.record_val(fed.rounds, hospital, dict(reply["metrics"]))
    recorder.selected, state = kept_round_state(
        recorder.rounds,
        task,
        cfg.train.selection,
        arrays.to_torch_state_dict(),
        out_dir / "checkpoints",
    )
    model.load_state_dict(state)
    return model, recorder
