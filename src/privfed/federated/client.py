"""What one hospital does when the server asks: plain functions over Flower records.

The hospital sees only ``node_config['data-path']`` (its own partition folder). Each training
message first scores the incoming global model on the hospital's validation split (so one
message per round carries both the previous round's validation and this round's update), then
trains locally, with DP-SGD whose accountant history lives in the node's run state.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from privfed.config import PrivFedConfig, resolved_config
from privfed.federated.adversary import corrupt
from privfed.federated.data_aware import TRAINED_VAL_FLAG, TRAINED_VAL_LOSS
from privfed.federated.data_cache import load_split, memo
from privfed.federated.scaffold import CONTROL_KEY, DELTA_KEY, control_variate
from privfed.privacy import noise_multiplier_for_target
from privfed.tasks import Task, get_task
from privfed.training import (
    DPSettings,
    dp_batch_size,
    dp_local_epochs,
    dp_max_grad_norm,
    dp_trainable,
    resolve_device,
    steps_per_epoch,
    train_with_config,
)

__all__ = [
    "count_bytes",
    "train_reply",
    "evaluate_reply",
    "query_reply",
    "CONFIG_KEY",
    "STATE_KEY",
    "TIMING_PREFIX",
    "BYTE_COUNTS",
]

log = logging.getLogger(__name__)

CONFIG_KEY = "privfed-config"
STATE_KEY = "privfed"
#: The hospital's SCAFFOLD control variate ``c_i`` in its run state.
SCAFFOLD_STATE_KEY = "privfed-scaffold"
#: Reply metrics with this prefix are seconds the ClientApp spent per phase (benchmarks read
#: them to split a round's time into load, (de)serialization, validation and training).
TIMING_PREFIX = "t_"
#: Prefix of reply metrics holding a task's named loss parts (:attr:`LocalResult.losses`).
LOSS_PREFIX = "loss_"
#: Reply metrics with serialized message sizes in bytes (:func:`count_bytes`).
BYTE_COUNTS = ("bytes_sent", "bytes_update", "bytes_received")


def _config(content: RecordDict) -> tuple[PrivFedConfig, dict[str, Any]]:
    config = dict(content["config"])
    return resolved_config(json.loads(str(config[CONFIG_KEY]))), config


def _node(node_config: dict[str, Any]) -> tuple[str, Path]:
    hospital = str(node_config.get("hospital", "")).strip()
    data_path = Path(str(node_config.get("data-path", "")))
    if not hospital or not data_path.is_dir():
        raise ValueError(
            f"SuperNode needs node config hospital=<name> and data-path=<existing dir>; got "
            f"hospital={hospital!r}, data-path={str(data_path)!r}"
        )
    return hospital, data_path


def _model(cfg: PrivFedConfig, arrays: ArrayRecord) -> torch.nn.Module:
    model = get_task(cfg.base.task, cfg).build_model()
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def _metrics(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}


def _noise_multiplier(cfg: PrivFedConfig, n_train: int) -> float:
    p = cfg.privacy
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    task = get_task(cfg.base.task, cfg)
    batch = dp_batch_size(task, cfg)
    total = (
        cfg.train_federated.rounds * dp_local_epochs(cfg) * task.dp_steps_per_epoch(n_train, batch)
    )
    params = {
        "target_epsilon": float(p.target_epsilon),
        "delta": p.delta,
        "sample_rate": 1.0 / steps_per_epoch(n_train, batch),  # Poisson rate: batch / examples
        "steps": total,
        "accountant": p.accountant,
    }
    return memo("noise_multiplier", params, lambda: noise_multiplier_for_target(**params))


def _check_dp_steps(
    task: Task, cfg: PrivFedConfig, hospital: str, server_round: int, taken: int, n_train: int
) -> None:
    """Warn when a task's fit took other DP steps than the noise was calibrated for.

    ε is computed from the steps taken (the reported history), so the guarantee stays
    honest; the warning says why ε may then miss ``privacy.target_epsilon``.
    """
    planned = dp_local_epochs(cfg) * task.dp_steps_per_epoch(n_train, dp_batch_size(task, cfg))
    if taken != planned:
        log.warning(
            "%s round %d: task %s took %d DP-SGD steps, the noise was calibrated for %d; "
            "ε is accounted from the steps taken",
            hospital,
            server_round,
            task.name,
            taken,
            planned,
        )


def _outgoing(
    model: torch.nn.Module,
    received: ArrayRecord,
    node_config: dict[str, Any],
    hospital: str,
    seed: int,
) -> ArrayRecord:
    """The trained weights, or, on a red-team SuperNode (``attack=<mode>``), a corrupted update."""
    mode = str(node_config.get("attack", "")).strip()
    if not mode:
        return ArrayRecord(model.state_dict())
    trained = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    sent = corrupt(trained, {k: v.numpy() for k, v in received.items()}, mode, seed=seed)
    log.warning("%s: red-team node config attack=%s: sending a corrupted update", hospital, mode)
    return ArrayRecord({k: torch.from_numpy(v) for k, v in sent.items()})


def train_reply(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """Validate the received global model, train it locally, reply update + metrics."""
    cfg, config = _config(content)
    hospital, data_path = _node(node_config)
    server_round = int(config.get("server-round", 0))
    use_dp = bool(config.get("dp", False))
    task = get_task(cfg.base.task, cfg)
    torch.set_num_threads(1)  # several hospitals share this machine's cores in local runs
    clock = [time.perf_counter()]

    def lap() -> float:
        now = time.perf_counter()
        seconds, clock[0] = now - clock[0], now
        return seconds

    train = load_split(task, data_path / "train", str(config[CONFIG_KEY]))
    val = load_split(task, data_path / "val", str(config[CONFIG_KEY]))
    timings = {"load_s": lap()}
    model = _model(cfg, content["arrays"])
    timings["deserialize_s"] = lap()
    received_val = task.evaluate(model, val)
    timings["validate_s"] = lap()

    saved = dict(state[STATE_KEY]) if STATE_KEY in state else {}
    dp = None
    if use_dp:
        sigma = float(saved.get("noise_multiplier") or _noise_multiplier(cfg, len(train)))
        history = json.loads(str(saved.get("dp_history", "[]")))
        dp = DPSettings(
            noise_multiplier=sigma,
            max_grad_norm=dp_max_grad_norm(task, cfg),
            history=[tuple(h) for h in history],
            trainable=dp_trainable(task, cfg),
            dropout=cfg.privacy.dropout,
        )
    seed = cfg.base.seed + 1000 * server_round + zlib.crc32(hospital.encode()) % 1000
    scaffold = _scaffold_begin(task, cfg, model, train, content, state)
    result = train_with_config(
        task,
        model,
        train,
        cfg,
        epochs=dp_local_epochs(cfg) if dp else cfg.train_federated.local_epochs,
        seed=seed,
        dp=dp,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        grad_correction=scaffold[0] if scaffold else None,
        label=f"{hospital} round {server_round}",
    )
    timings["train_s"] = lap()
    if dp is not None:
        _check_dp_steps(task, cfg, hospital, server_round, result.dp_steps(dp.history), len(train))
    trained_val = {}
    if bool(config.get(TRAINED_VAL_FLAG, False)):  # data-aware aggregation weighs by it
        trained_val[TRAINED_VAL_LOSS] = float(np.mean(task.example_losses(model, val)))
        timings["trained_val_s"] = lap()
    ident: dict[str, Any] = {"hospital": hospital}
    if dp is not None:
        state[STATE_KEY] = ConfigRecord(
            {
                "noise_multiplier": dp.noise_multiplier,
                "dp_history": json.dumps(result.history),
            }
        )
        ident["dp_history"] = json.dumps(result.history)
    log.info(
        "%s round %d: received-model val %s=%.4f, train loss %.4f%s",
        hospital,
        server_round,
        task.primary_metric,
        received_val[task.primary_metric],
        result.train_loss,
        f", σ={dp.noise_multiplier:.3f}" if dp else "",
    )
    arrays = _outgoing(model, content["arrays"], node_config, hospital, seed)
    timings["serialize_s"] = lap()
    metrics = {
        "num-examples": result.num_examples,
        "train_loss": result.train_loss,
        **_metrics(LOSS_PREFIX, dict(result.losses)),
        **_metrics("val_", received_val),
        **trained_val,
        **_metrics(TIMING_PREFIX, timings),
    }
    reply = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord(metrics),
            "ident": ConfigRecord(ident),
        }
    )
    if scaffold:
        reply[DELTA_KEY] = scaffold[1]
    count_bytes(content, reply, hospital=hospital, server_round=server_round)
    return reply


def count_bytes(
    received: RecordDict, reply: RecordDict, *, hospital: str, server_round: int
) -> dict[str, int]:
    """Serialized sizes of this round's messages (Flower's protobuf), added to the reply's metrics.

    ``bytes_sent`` is the reply as serialized before these three counters are added to it (they
    add a few dozen bytes); ``bytes_update`` is its model arrays alone; ``bytes_received`` is
    the server's message content.
    """
    from flwr.common.serde import array_record_to_proto, recorddict_to_proto

    sizes = {
        "bytes_received": recorddict_to_proto(received).ByteSize(),
        "bytes_sent": recorddict_to_proto(reply).ByteSize(),
        "bytes_update": array_record_to_proto(reply["arrays"]).ByteSize(),
    }
    for key, value in sizes.items():
        reply["metrics"][key] = value
    log.info(
        "%s round %d: sent %.1f KiB (model update %.1f KiB), received %.1f KiB",
        hospital,
        server_round,
        sizes["bytes_sent"] / 1024,
        sizes["bytes_update"] / 1024,
        sizes["bytes_received"] / 1024,
    )
    return sizes


def _scaffold_begin(
    task: Any,
    cfg: PrivFedConfig,
    model: torch.nn.Module,
    train: Any,
    content: RecordDict,
    state: RecordDict,
) -> tuple[list[torch.Tensor], ArrayRecord] | None:
    """SCAFFOLD, when the server sent ``c``: the step correction ``c - c_i`` and ``Δc_i``.

    ``c_i`` (zero at first) lives in the node's run state; ``c_i⁺`` is the mean gradient at the
    received global model (option I of Karimi et al.), stored for the next round.
    """
    if CONTROL_KEY not in content:
        return None
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    c = content[CONTROL_KEY].to_torch_state_dict()
    missing = sorted(set(names) - set(c))
    if missing:
        raise ValueError(f"SCAFFOLD: the server's control variate lacks {missing[:5]}")
    c_i = (
        state[SCAFFOLD_STATE_KEY].to_torch_state_dict()
        if SCAFFOLD_STATE_KEY in state
        else {n: torch.zeros_like(c[n]) for n in names}
    )
    correction = [c[n] - c_i[n] for n in names]
    fresh = control_variate(
        task,
        model,
        train,
        batch_size=task.train_batch_size(),
        device=resolve_device(cfg.base.device),
    )
    new_c_i = {n: g.detach().cpu() for n, g in zip(names, fresh, strict=True)}
    state[SCAFFOLD_STATE_KEY] = ArrayRecord(new_c_i)
    delta = ArrayRecord({n: new_c_i[n] - c_i[n] for n in names})
    return correction, delta


def evaluate_reply(
    content: RecordDict, node_config: dict[str, Any], state: RecordDict
) -> RecordDict:
    """Score the global model on this hospital's validation split.

    Also returns the node's DP accountant history: it is the complete record of what this
    hospital spent, even if one of its train replies never reached the server.
    """
    cfg, config = _config(content)
    hospital, data_path = _node(node_config)
    task = get_task(cfg.base.task, cfg)
    torch.set_num_threads(1)
    val = load_split(task, data_path / "val", str(config[CONFIG_KEY]))
    metrics = task.evaluate(_model(cfg, content["arrays"]), val)
    ident: dict[str, Any] = {"hospital": hospital}
    if STATE_KEY in state:
        ident["dp_history"] = str(dict(state[STATE_KEY])["dp_history"])
    return RecordDict(
        {
            "metrics": MetricRecord({"num-examples": len(val), **_metrics("val_", metrics)}),
            "ident": ConfigRecord(ident),
        }
    )


def query_reply(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """The roll call: this hospital's name, and its additive statistics when asked.

    The name lets the server say which hospital a Flower node id is (dropouts, errors). The
    statistics are counts and sums over the hospital's training split, never a row.
    """
    cfg, config = _config(content)
    hospital, data_path = _node(node_config)
    records: dict[str, Any] = {"ident": ConfigRecord({"hospital": hospital})}
    if bool(config.get("statistics", False)):
        stats = get_task(cfg.base.task, cfg).local_statistics([data_path / "train"])
        if stats is None:
            raise ValueError(f"task {cfg.base.task!r} defines no statistics to send")
        log.info("%s: sent statistics %s", hospital, sorted(stats))
        records["statistics"] = ArrayRecord(
            {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in stats.items()}
        )
    return RecordDict(records)
