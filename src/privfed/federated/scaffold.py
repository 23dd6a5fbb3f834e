"""SCAFFOLD (Karimi et al., 2020): control variates that correct client drift.

The server keeps a global control variate ``c`` (one array per model parameter) and sends it
beside the weights; each hospital keeps its own ``c_i`` in its Flower run state. At every local
step the hospital adds ``c - c_i`` to its gradient, so its steps follow the federation's
direction rather than its own data's. It replies its trained weights ``y_i`` (the server takes
``Δy_i = y_i - x``) and ``Δc_i = c_i⁺ - c_i``, where ``c_i⁺`` is its mean gradient at the
global model ``x`` (the paper's option I: right for any local optimizer, Adam included, where
option II's ``(x - y_i) / (K·η_l)`` holds only for plain SGD). The server then sets

    x ← x + η_g · mean_i Δy_i        c ← c + (|S| / N) · mean_i Δc_i

with ``S`` the hospitals that replied and ``N`` all hospitals. Means are unweighted, as in the
paper.

Not with DP-SGD: ``c_i⁺`` is an un-clipped, un-noised gradient of the hospital's data, sent to
the server every round, so it would leak what DP-SGD protects (``privacy.enabled`` must be
false). Not with SecAgg+ either (not implemented on that path). Update screening checks the
weights as for every strategy; a ``Δc_i`` that is not finite or misshapen drops the reply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn
from torch.utils.data import DataLoader, Dataset

from privfed.tasks.base import Task
from privfed.training import trainable

__all__ = [
    "CONTROL_KEY",
    "DELTA_KEY",
    "Scaffold",
    "control_variate",
    "scaffold_update",
]

log = logging.getLogger(__name__)

#: Record names: the server's ``c`` in a train message; a hospital's ``Δc_i`` in its reply.
CONTROL_KEY = "scaffold-c"
DELTA_KEY = "scaffold-dc"


def scaffold_update(
    x: Mapping[str, np.ndarray],
    c: Mapping[str, np.ndarray],
    delta_y: Sequence[Mapping[str, np.ndarray]],
    delta_c: Sequence[Mapping[str, np.ndarray]],
    *,
    server_lr: float,
    num_hospitals: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The server step: ``x + η_g·mean(Δy)`` and ``c + (|S|/N)·mean(Δc)``.

    Arrays of ``x`` with an integer dtype (counters) take the rounded mean of the updates.
    """
    if not delta_y or len(delta_y) != len(delta_c):
        raise ValueError(
            f"need one Δc per Δy and at least one of each, got {len(delta_y)} and {len(delta_c)}"
        )
    share = len(delta_c) / num_hospitals
    new_x: dict[str, np.ndarray] = {}
    for key, value in x.items():
        mean = np.mean([np.asarray(d[key], dtype=np.float64) for d in delta_y], axis=0)
        step = value.astype(np.float64) + server_lr * mean
        new_x[key] = (np.rint(step) if value.dtype.kind in "iub" else step).astype(value.dtype)
    new_c = {
        key: (
            value.astype(np.float64)
            + share * np.mean([np.asarray(d[key], dtype=np.float64) for d in delta_c], axis=0)
        ).astype(value.dtype)
        for key, value in c.items()
    }
    return new_x, new_c


def control_variate(
    task: Task, model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device
) -> list[torch.Tensor]:
    """``c_i⁺``: the mean gradient of ``task.loss`` at ``model``'s weights over ``dataset``.

    One pass without updates, batch means weighted by batch size; the model is left unchanged
    (its gradients cleared).
    """
    model.to(device).train()
    params = trainable(model)  # not a LoRA model's frozen base
    total = [torch.zeros_like(p) for p in params]
    seen = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = [t.to(device) for t in batch]
        n = len(batch[-1])
        model.zero_grad(set_to_none=True)
        task.loss(model, batch).backward()
        for acc, p in zip(total, params, strict=True):
            if p.grad is not None:
                acc.add_(p.grad.detach(), alpha=n)
        seen += n
    model.zero_grad(set_to_none=True)
    return [t / max(seen, 1) for t in total]


class Scaffold(FedAvg):
    """SCAFFOLD on Flower's Message API: ``c`` travels as a second array record.

    Args:
        num_hospitals: ``N``, every hospital of the federation (``c``'s step is ``|S|/N``).
        server_lr: ``η_g``, the global step on the mean update (1 = the hospitals' mean).
        control_keys: model parameter names that carry a control variate (buffers do not);
            None takes every floating-point array of the first global model.
        **kwargs: :class:`flwr.serverapp.strategy.FedAvg`'s sampling arguments.
    """

    def __init__(
        self,
        *,
        num_hospitals: int,
        server_lr: float = 1.0,
        control_keys: Sequence[str] | None = None,
        **kwargs: object,
    ) -> None:
        if num_hospitals < 1:
            raise ValueError(f"num_hospitals must be >= 1, got {num_hospitals!r}")
        if not server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {server_lr!r}")
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.num_hospitals = num_hospitals
        self.server_lr = server_lr
        self.control_keys = tuple(control_keys) if control_keys is not None else None
        #: the global control variate ``c`` (saved with the resume state)
        self.control: dict[str, np.ndarray] = {}
        self._x: dict[str, np.ndarray] | None = None

    def _init_control(self, x: Mapping[str, np.ndarray]) -> None:
        keys = self.control_keys or [k for k, v in x.items() if v.dtype.kind == "f"]
        missing = sorted(set(keys) - set(x))
        if missing:
            raise ValueError(f"control_keys not in the model's arrays: {missing[:5]}")
        self.control = {k: np.zeros_like(x[k]) for k in keys}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, each also carrying ``c`` under :data:`CONTROL_KEY`."""
        self._x = {k: v.numpy() for k, v in arrays.items()}
        if not self.control:
            self._init_control(self._x)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        control = ArrayRecord({k: torch.from_numpy(v.copy()) for k, v in self.control.items()})
        for message in messages:
            message.content[CONTROL_KEY] = control
        return messages

    def _usable(self, reply: Message) -> bool:
        content = reply.content
        if self.arrayrecord_key not in content or DELTA_KEY not in content:
            log.warning("SCAFFOLD: reply without weights or %s; left out", DELTA_KEY)
            return False
        delta = content[DELTA_KEY]
        for key, ref in self.control.items():
            value = delta[key].numpy() if key in delta else None
            if value is None or value.shape != ref.shape or not np.all(np.isfinite(value)):
                log.warning(
                    "SCAFFOLD: reply's %s[%r] is missing, misshapen or not finite", DELTA_KEY, key
                )
                return False
        return True

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``x + η_g·mean(Δy)``; ``c`` moves by ``(|S|/N)·mean(Δc)``."""
        if self._x is None:
            raise RuntimeError("aggregate_train before configure_train: no global model held")
        valid = [r for r in replies if not r.has_error() and self._usable(r)]
        if not valid:
            return None, None
        x = self._x
        delta_y = [
            {k: r.content[self.arrayrecord_key][k].numpy().astype(np.float64) - x[k] for k in x}
            for r in valid
        ]
        delta_c = [{k: r.content[DELTA_KEY][k].numpy() for k in self.control} for r in valid]
        new_x, self.control = scaffold_update(
            x,
            self.control,
            delta_y,
            delta_c,
            server_lr=self.server_lr,
            num_hospitals=self.num_hospitals,
        )
        norm = float(
            np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in self.control.values()))
        )
        log.info(
            "SCAFFOLD round %d: %d of %d hospitals; ||c|| = %.4g",
            server_round,
            len(valid),
            self.num_hospitals,
            norm,
        )
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return ArrayRecord({k: torch.from_numpy(v) for k, v in new_x.items()}), metrics
