"""SecAgg+'s hospital half: what a ClientApp does when the server runs SecAgg+.

:func:`secure_aggregation_mod` hands only SecAgg+ messages to Flower's ``secaggplus_mod``
(other train messages pass untouched); :func:`secure_train_reply` turns a legacy ``FitIns``
into the same :func:`~privfed.federated.client.train_reply` the Message API path calls (same
data, seed, DP-SGD and accountant state), then replies the weighted update
:func:`weighted_update`, which ``secaggplus_mod`` clips, quantizes and masks. Why updates, and
why the hospital weighs them itself: :mod:`privfed.federated.secagg`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from privfed.config import resolved_config
from privfed.federated.client import CONFIG_KEY, train_reply
from privfed.tasks import get_task

__all__ = ["is_secure_fit", "secure_aggregation_mod", "secure_train_reply", "weighted_update"]

log = logging.getLogger(__name__)


def weighted_update(
    trained: Sequence[np.ndarray],
    received: Sequence[np.ndarray],
    *,
    num_examples: int,
    max_weight: int,
) -> list[np.ndarray]:
    """What a hospital hands to SecAgg+: ``num_examples / max_weight x (trained - received)``.

    float64, so integer tensors and float32 weights subtract exactly.
    """
    if not 0 < num_examples <= max_weight:
        raise ValueError(
            f"num-examples {num_examples} is outside (0, train_federated.secure_aggregation."
            f"max_weight={max_weight}]; set max_weight to at least the largest hospital's "
            "training rows"
        )
    if len(trained) != len(received):
        raise ValueError(f"{len(trained)} trained tensors for {len(received)} received")
    weight = num_examples / max_weight
    return [
        weight * (np.asarray(t, dtype=np.float64) - np.asarray(r, dtype=np.float64))
        for t, r in zip(trained, received, strict=True)
    ]


def is_secure_fit(content: RecordDict) -> bool:
    """A legacy ``FitIns`` (what SecAgg+'s masked-vector stage hands the train handler)."""
    return "fitins.config" in content.config_records


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages only; every other message passes.

    ``secaggplus_mod`` treats every train message as a protocol step and fails on the
    Message API's; a ClientApp serves both paths, so the protocol's own record decides.
    """
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(msg, ctxt, call_next)


def secure_train_reply(
    content: RecordDict, node_config: dict[str, Any], state: RecordDict
) -> RecordDict:
    """Train as :func:`train_reply` does; reply a legacy ``FitRes`` with the weighted update.

    ``secaggplus_mod`` clips, quantizes and masks the update before it leaves the hospital.
    """
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    config = dict(fitins.config)
    cfg = resolved_config(json.loads(str(config[CONFIG_KEY])))
    secagg = cfg.train_federated.secure_aggregation
    template = get_task(cfg.base.task, cfg).build_model().state_dict()
    received = parameters_to_ndarrays(fitins.parameters)
    if len(received) != len(template):
        raise ValueError(f"received {len(received)} tensors; the model has {len(template)}")
    arrays = ArrayRecord(
        {name: torch.from_numpy(np.array(a)) for name, a in zip(template, received, strict=True)}
    )
    reply = train_reply(
        RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), node_config, state
    )
    metrics = dict(reply["metrics"])
    ident = dict(reply["ident"])
    trained = [t.numpy() for t in reply["arrays"].to_torch_state_dict().values()]
    update = weighted_update(
        trained,
        received,
        num_examples=int(metrics["num-examples"]),
        max_weight=secagg.max_weight,
    )
    clipped = int(sum(int((np.abs(u) > secagg.clipping_range).sum()) for u in update))
    if clipped:
        log.warning(
            "%s: %d update value(s) exceed train_federated.secure_aggregation."
            "clipping_range=%g and will be clipped",
            ident["hospital"],
            clipped,
            secagg.clipping_range,
        )
    fitres = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters(update),
        # Flower's own weight factor is num_examples / max_weight: exactly 1 (see module doc)
        num_examples=secagg.max_weight,
        metrics={**metrics, **ident, "secagg-clipped": clipped},
    )
    return compat.fitres_to_recorddict(fitres, keep_input=False)
