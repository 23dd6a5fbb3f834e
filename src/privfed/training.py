"""One local training pass, shared by centralized, local-only and each federated hospital.

Stages describe a pass as a :class:`FitPlan` and hand it to :meth:`Task.fit
<privfed.tasks.base.Task.fit>`. The default fit is :func:`train_local_pass`: plain PyTorch, one
Adam over the task's :meth:`~privfed.tasks.base.Task.loss`, optional DP-SGD through Opacus with a
carried-over accountant history, optional FedProx and SCAFFOLD corrections. A task whose
training does not fit one optimizer and one loss (a GAN's alternating steps) overrides ``fit``
and reuses :func:`private_training` for the part that touches private data.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from privfed.config import PrivFedConfig
from privfed.tasks.base import Task

__all__ = [
    "DPSettings",
    "FitPlan",
    "LocalResult",
    "PrivateTraining",
    "dp_batch_size",
    "dp_local_epochs",
    "dp_trainable",
    "dp_lr",
    "dp_max_grad_norm",
    "only_trainable",
    "private_training",
    "train_local_pass",
    "train_with_config",
    "resolve_device",
    "steps_per_epoch",
    "trainable",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPSettings:
    noise_multiplier: float
    max_grad_norm: float
    #: Accountant entries from earlier rounds: ε composes over all of them.
    history: Sequence[tuple[float, float, int]] = field(default_factory=tuple)
    #: Module names whose parameters DP-SGD trains (``privacy.trainable``); None: all.
    trainable: Sequence[str] | None = None
    #: False (``privacy.dropout``): dropout layers are off while DP-SGD trains.
    dropout: bool = True


@dataclass(frozen=True)
class LocalResult:
    """What a training pass reports.

    ``history`` is the DP accountant's history, the carried-over entries of
    :attr:`DPSettings.history` extended by exactly the DP-SGD steps this pass took on private
    data, as ``(noise_multiplier, sample_rate, steps)``: ε is computed from it, so a task that
    takes more or fewer private steps than planned is accounted for what it did.
    """

    train_loss: float
    num_examples: int
    history: list[tuple[float, float, int]]
    #: named parts of a pass whose loss has several (a GAN's ``generator_loss`` and
    #: ``discriminator_loss``), each a mean over the pass's steps; they travel with the
    #: update and become per-round curves (rounds.json, MLflow)
    losses: Mapping[str, float] = field(default_factory=dict)

    def dp_steps(self, carried: Sequence[tuple[float, float, int]] = ()) -> int:
        """DP-SGD steps this pass added to ``carried`` (the history it started from)."""
        from privfed.privacy import history_steps  # Opacus: imported only where DP is used

        return history_steps(self.history) - history_steps(carried)


@dataclass(frozen=True)
class FitPlan:
    """One training pass as the stage decided it; :meth:`Task.fit` carries it out.

    ``dp`` set means every step that reads private data must be a DP-SGD step with these
    settings (:func:`private_training` makes them); ``proximal_mu`` and ``grad_correction``
    are FedProx's and SCAFFOLD's hospital halves.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    dp: DPSettings | None = None
    proximal_mu: float = 0.0
    grad_correction: Sequence[torch.Tensor] | None = None
    device: torch.device | None = None
    label: str = ""
    #: called with the 1-based epoch after each epoch (a baseline scores and keeps its best
    #: epoch there: :class:`privfed.selection.BestEpoch`); the model is back in train mode after
    epoch_end: Callable[[int], None] | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The plan as :func:`train_local_pass`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("base.device='cuda' but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters training changes (a LoRA model's frozen base is not among them)."""
    return [p for p in model.parameters() if p.requires_grad]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))


def dp_batch_size(task: Task, cfg: PrivFedConfig) -> int:
    """DP-SGD's expected batch: ``privacy.batch_size``, else :meth:`Task.dp_batch_size`."""
    return cfg.privacy.batch_size or task.dp_batch_size()


def dp_lr(task: Task, cfg: PrivFedConfig) -> float:
    """DP-SGD's step size: ``privacy.lr``, else the task's (:meth:`Task.dp_lr`)."""
    return cfg.privacy.lr or task.dp_lr()


def dp_max_grad_norm(task: Task, cfg: PrivFedConfig) -> float:
    """DP-SGD's clipping bound: ``privacy.max_grad_norm``, else :meth:`Task.dp_max_grad_norm`."""
    return cfg.privacy.max_grad_norm or task.dp_max_grad_norm()


def dp_trainable(task: Task, cfg: PrivFedConfig) -> tuple[str, ...] | None:
    """What DP-SGD trains: ``privacy.trainable``, else :meth:`Task.dp_trainable` (None: all)."""
    return cfg.privacy.trainable or task.dp_trainable()


def _selects(name: str, module: str) -> bool:
    """Whether parameter ``name`` lies under ``module``: a module name or an fnmatch pattern
    (``*.adn.N``: every normalization layer of a MONAI UNet; ``*``: everything)."""
    return fnmatch.fnmatchcase(name, module) or fnmatch.fnmatchcase(name, f"{module}.*")


def dp_local_epochs(cfg: PrivFedConfig) -> int:
    """Local epochs of a DP round: ``privacy.local_epochs``, else the federation's."""
    return cfg.privacy.local_epochs or cfg.train_federated.local_epochs


@contextlib.contextmanager
def only_trainable(model: nn.Module, modules: Sequence[str] | None) -> Iterator[None]:
    """Freeze every parameter outside ``modules`` (module names or patterns) while the block runs.

    DP-SGD's noise grows with the number of values it trains: fine-tuning only a part of a
    pretrained model (its head, say) spends the same ε on fewer values. Parameters already
    frozen (a LoRA model's base) stay frozen; the flags are restored afterwards.
    """
    if modules is None:
        yield
        return
    params = dict(model.named_parameters())
    chosen = {name for name in params if any(_selects(name, m) for m in modules)}
    unknown = [m for m in modules if not any(_selects(n, m) for n in chosen)]
    if unknown:
        raise ValueError(
            f"privacy.trainable names {unknown}, which hold no parameter of the model "
            f"(its top-level modules: {sorted({n.split('.')[0] for n in params})})"
        )
    saved = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(saved[name] and name in chosen)
    try:
        yield
    finally:
        for name, p in params.items():
            p.requires_grad_(saved[name])


@dataclass
class PrivateTraining:
    """What :func:`private_training` yields: the parts to train with, and the accountant."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    _accountant: Any = None

    def history(self) -> list[tuple[float, float, int]]:
        """The carried-over history plus one entry per DP-SGD step taken; [] without DP."""
        if self._accountant is None:
            return []
        return [(float(s), float(q), int(k)) for s, q, k in self._accountant.history]


@contextlib.contextmanager
def private_training(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, dp: DPSettings | None
) -> Iterator[PrivateTraining]:
    """DP-SGD parts for ``model`` (Opacus), or the parts unchanged when ``dp`` is None.

    Every ``optimizer.step()`` on the yielded optimizer is one noisy, clipped, Poisson-sampled
    step that the accountant records on top of ``dp.history``. The hooks Opacus adds are
    removed on exit, so ``model`` is a plain module again (and can be sent or saved).
    """
    if dp is None:
        yield PrivateTraining(model, optimizer, loader)
        return
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    engine.accountant.history = [tuple(h) for h in dp.history]
    module, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
    )
    try:
        yield PrivateTraining(module, private_optimizer, private_loader, engine.accountant)
    finally:
        module._close()


def _proximal_correction(
    model: nn.Module, anchor: Sequence[torch.Tensor], *, lr: float, mu: float
) -> None:
    """FedProx: a gradient step on (mu/2)·||w - w_global||², applied after the optimizer step.

    Applied outside the loss so DP-SGD's per-sample clipping never sees it: the term does not
    depend on data, so it costs no privacy.
    """
    with torch.no_grad():
        for param, ref in zip(trainable(model), anchor, strict=True):
            param.sub_(lr * mu * (param - ref))


def _secret_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")


def train_local_pass(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    dp: DPSettings | None = None,
    proximal_mu: float = 0.0,
    grad_correction: Sequence[torch.Tensor] | None = None,
    device: torch.device | None = None,
    label: str = "",
    epoch_end: Callable[[int], None] | None = None,
) -> LocalResult:
    """Train ``model`` in place for ``epochs`` epochs; report loss and the DP accountant history.

    ``grad_correction`` (one tensor per parameter, SCAFFOLD's ``c - c_i``) is added to every
    step's gradient. It is refused with DP-SGD: Opacus rebuilds the gradient from clipped
    per-sample gradients at ``step()``, and the correction is itself data-dependent.
    """
    if grad_correction is not None and dp is not None:
        raise ValueError("grad_correction (SCAFFOLD) cannot be combined with DP-SGD (dp)")
    with (
        only_trainable(model, dp.trainable if dp is not None else None),
        _dropout_off(model, dp is not None and not dp.dropout),
    ):
        device = device or torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        # DP-SGD's guarantee needs its Poisson sampling and noise to be secret. Opacus draws both
        # from torch's global RNG (without secure_mode), and ``seed`` derives from a config the
        # server knows, so DP passes reseed it from OS entropy: DP runs are not bitwise
        # reproducible.
        torch.manual_seed(seed if dp is None else _secret_seed())
        model.to(device).train()
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.Adam(trainable(model), lr=lr, weight_decay=weight_decay)
        anchor = [p.detach().clone() for p in trainable(model)] if proximal_mu > 0 else None
        correction = (
            [t.detach().to(device) for t in grad_correction]
            if grad_correction is not None
            else None
        )

        with private_training(model, optimizer, loader, dp) as private:
            train_module, optimizer, loader = private.module, private.optimizer, private.loader
            total, seen = 0.0, 0
            for epoch in range(epochs):
                train_module.train()  # epoch_end may have scored the model in eval mode
                epoch_loss, epoch_n = 0.0, 0
                for batch in loader:
                    batch = [t.to(device) for t in batch]
                    n = len(batch[-1])
                    optimizer.zero_grad(set_to_none=True)
                    # Poisson sampling can draw an empty batch: it goes through the same path
                    # (Opacus then adds noise to a zero sum and counts the step); its NaN mean
                    # loss is not added to the epoch loss.
                    loss = task.loss(train_module, batch)
                    loss.backward()
                    if correction is not None:
                        for param, corr in zip(trainable(model), correction, strict=True):
                            if param.grad is not None:
                                param.grad.add_(corr)
                    optimizer.step()
                    if anchor is not None:
                        _proximal_correction(model, anchor, lr=lr, mu=proximal_mu)
                    if n:
                        epoch_loss += loss.item() * n
                        epoch_n += n
                total += epoch_loss
                seen += epoch_n
                log.info(
                    "%s epoch %d/%d loss=%.4f",
                    label or "train",
                    epoch + 1,
                    epochs,
                    epoch_loss / max(epoch_n, 1),
                )
                if epoch_end is not None:
                    epoch_end(epoch + 1)
        return LocalResult(
            train_loss=total / max(seen, 1),
            num_examples=len(dataset),
            history=private.history(),
        )


@contextlib.contextmanager
def _dropout_off(model: nn.Module, off: bool) -> Iterator[None]:
    """Dropout probability 0 in every dropout layer while the block runs (when ``off``).

    DP-SGD's Gaussian noise already regularizes; dropout's extra gradient variance is paid for
    with a signal that the noise leaves little of (measured in README's DP section).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    saved = [layer.p for layer in layers]
    if off:
        for layer in layers:
            layer.p = 0.0
    try:
        yield
    finally:
        for layer, p in zip(layers, saved, strict=True):
            layer.p = p


def train_with_config(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    cfg: PrivFedConfig,
    *,
    epochs: int,
    seed: int,
    label: str,
    dp: DPSettings | None = None,
    proximal_mu: float = 0.0,
    grad_correction: Sequence[torch.Tensor] | None = None,
    epoch_end: Callable[[int], None] | None = None,
) -> LocalResult:
    """:meth:`Task.fit` with optimizer settings and device from ``cfg``'s sections.

    The batch size and step size are the task's (:meth:`Task.train_batch_size`,
    :meth:`Task.train_lr`), or DP-SGD's own (:func:`dp_batch_size`, :func:`dp_lr`) with ``dp``.
    """
    plan = FitPlan(
        epochs=epochs,
        batch_size=dp_batch_size(task, cfg) if dp else task.train_batch_size(),
        lr=dp_lr(task, cfg) if dp else task.train_lr(),
        weight_decay=cfg.train.weight_decay,
        seed=seed,
        dp=dp,
        proximal_mu=proximal_mu,
        grad_correction=grad_correction,
        device=resolve_device(cfg.base.device),
        label=label,
        epoch_end=epoch_end,
    )
    return task.fit(model, dataset, plan)
