"""One rule for which weights a training run keeps: the best validation score, never test.

Centralized, local-only and federated models are compared with each other, so each keeps the
epoch (or round) whose model scored best on its validation split by the task's primary metric
(``train.selection: best_val``), or all keep their last one (``last``). Centralized and
local-only training score the model after every epoch (:class:`BestEpoch`); the federation's
server picks the round whose global model the hospitals scored best on their own validation
splits (:func:`best_round`; the mean over hospitals, since the server cannot pool them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from privfed.checkpoints import load_state
from privfed.config import PrivFedConfig
from privfed.tasks.base import Task
from privfed.training import LocalResult, train_with_config

__all__ = [
    "BestEpoch",
    "Selection",
    "best_round",
    "fit_selected",
    "improves",
    "kept_round_state",
]

log = logging.getLogger(__name__)

Selection = Literal["best_val", "last"]


def improves(score: float, best: float | None, *, higher_is_better: bool) -> bool:
    """Whether ``score`` beats ``best`` (None: nothing yet); NaN never does. Ties keep the
    earlier model."""
    if math.isnan(score):
        return False
    if best is None or math.isnan(best):
        return True
    return score > best if higher_is_better else score < best


@dataclass
class BestEpoch:
    """Scores ``model`` on ``val`` after each epoch and keeps a copy of the best epoch's weights.

    Pass :meth:`after_epoch` as :attr:`privfed.training.FitPlan.epoch_end`; call
    :meth:`restore` once training ends, so ``model`` holds the selected weights.
    """

    task: Task
    model: nn.Module
    val: Dataset
    rule: Selection = "best_val"
    label: str = ""
    #: the primary metric after each epoch, in order
    curve: list[float] = field(default_factory=list)
    epoch: int | None = None
    score: float | None = None
    _state: dict[str, torch.Tensor] | None = None

    def after_epoch(self, epoch: int) -> None:
        """Score the model of ``epoch`` (1-based); keep its weights if it is the best so far."""
        score = float(self.task.selection_score(self.model, self.val))
        self.curve.append(score)
        if self.rule == "last" or improves(
            score, self.score, higher_is_better=self.task.higher_is_better
        ):
            self.epoch, self.score = epoch, score
            if self.rule == "best_val":
                self._state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        log.info(
            "%s epoch %d: val %s=%.4f (kept: epoch %s)",
            self.label or "train",
            epoch,
            self.task.primary_metric,
            score,
            self.epoch,
        )

    def restore(self) -> None:
        """Load the selected epoch's weights into the model (the last epoch's stay for
        ``last``)."""
        if not self.curve:
            raise RuntimeError(
                f"{self.label or 'training'}: no epoch was scored; the task's fit must call "
                "FitPlan.epoch_end after every epoch"
            )
        if self._state is not None:
            self.model.load_state_dict(self._state)

    def record(self) -> dict[str, Any]:
        """What the stage's metrics say about the selection."""
        return {"rule": self.rule, "epoch": self.epoch, "val_curve": self.curve}


def best_round(
    rounds: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    higher_is_better: bool,
    rule: Selection = "best_val",
) -> int:
    """The round (1-based) whose global model the server keeps.

    ``rounds`` is the recorder's list (index 0: the initial model, never selected); each
    row's ``val`` is the mean over hospitals of their validation metrics. Rounds without a
    score (every hospital dropped out of the evaluation) are skipped; with none scored, the
    last round is kept.
    """
    last = len(rounds) - 1
    if rule == "last":
        return last
    best, chosen = None, last
    for row in rounds[1:]:
        score = float(row.get("val", {}).get(metric, math.nan))
        if improves(score, best, higher_is_better=higher_is_better):
            best, chosen = score, int(row["round"])
    return chosen


def kept_round_state(
    rounds: Sequence[Mapping[str, Any]],
    task: Task,
    rule: Selection,
    final: Mapping[str, torch.Tensor],
    checkpoints: Path,
) -> tuple[int, Mapping[str, torch.Tensor]]:
    """The round :func:`best_round` picks and its global model: ``final`` (the last round's)
    or that round's checkpoint (every round's is in ``checkpoints``, a resumed run's too)."""
    last = len(rounds) - 1
    chosen = best_round(
        rounds, task.primary_metric, higher_is_better=task.higher_is_better, rule=rule
    )
    if chosen == last:
        return chosen, final
    log.info("keeping the global model of round %d (best validation) of %d", chosen, last)
    return chosen, load_state(checkpoints / f"round_{chosen:03d}.pt")["state_dict"]


def fit_selected(
    task: Task,
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    cfg: PrivFedConfig,
    *,
    epochs: int,
    seed: int,
    label: str,
) -> tuple[LocalResult, BestEpoch]:
    """A baseline's training (no DP): ``epochs`` epochs, then the weights ``train.selection``
    keeps are loaded into ``model``."""
    kept = BestEpoch(task, model, val, rule=cfg.train.selection, label=label)
    result = train_with_config(
        task, model, train, cfg, epochs=epochs, seed=seed, label=label, epoch_end=kept.after_epoch
    )
    kept.restore()
    return result, kept
