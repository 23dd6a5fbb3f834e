"""One selection rule for every model: the best validation epoch or round, never the test split."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from privfed.checkpoints import load_model
from privfed.config import config_from_dict
from privfed.partitions import hospital_dirs, split_dirs
from privfed.registry import promotion_gate, ratio_range
from privfed.selection import BestEpoch, best_round
from privfed.stages import train_centralized, train_local
from privfed.tasks import get_task
from tests.conftest import partition, raw_params


def _rows(scores: list[float]) -> list[dict]:
    return [{"round": 0, "val": {}}] + [
        {"round": r, "val": {"m": s}} for r, s in enumerate(scores, start=1)
    ]


def test_best_round_is_the_best_validation_round_not_the_last() -> None:
    rows = _rows([0.6, 0.8, math.nan, 0.7])
    assert best_round(rows, "m", higher_is_better=True) == 2
    assert best_round(rows, "m", higher_is_better=False) == 1  # perplexity-like: lower wins
    assert best_round(rows, "m", higher_is_better=True, rule="last") == 4
    assert best_round(_rows([0.5, 0.5]), "m", higher_is_better=True) == 1  # a tie keeps the first
    assert best_round(_rows([math.nan, math.nan]), "m", higher_is_better=True) == 2  # none scored


class _Scripted:
    """A task stand-in whose validation score after each epoch is given in advance."""

    primary_metric = "m"
    higher_is_better = True

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)

    def selection_score(self, model: nn.Module, val: object) -> float:
        return next(self.scores)


@pytest.mark.parametrize(("rule", "kept"), [("best_val", 2), ("last", 3)])
def test_best_epoch_loads_the_kept_epochs_weights(rule: str, kept: int) -> None:
    # Prepare: the weight equals the epoch number after each epoch
    model = nn.Linear(1, 1, bias=False)
    best = BestEpoch(_Scripted([0.5, 0.9, 0.7]), model, val=None, rule=rule)  # type: ignore[arg-type]
    # Execute
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.after_epoch(epoch)
    best.restore()
    # Assert
    assert best.epoch == kept and float(model.weight.detach()) == kept
    assert best.record() == {"rule": rule, "epoch": kept, "val_curve": [0.5, 0.9, 0.7]}


def test_an_unscored_fit_is_an_error_not_a_silent_last_epoch() -> None:
    best = BestEpoch(_Scripted([]), nn.Linear(1, 1), val=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="epoch_end"):
        best.restore()


def test_the_gate_records_the_ratio_to_each_centralized_seed() -> None:
    assert ratio_range(0.8, [0.8, 1.0, 0.9]) == pytest.approx([0.8, 1.0])
    assert ratio_range(2.0, [1.8, 2.2], higher_is_better=False) == pytest.approx([0.9, 1.1])
    decision = promotion_gate(
        candidate_metric=0.6,
        central_metric=0.9,
        central_scores=[0.8, 1.0],
        min_ratio=0.9,
        epsilon=1.0,
        epsilon_budget=1.0,
        validation_passed=True,
        split="val",
    )
    assert decision.checks["utility_ratio_range"] == pytest.approx([0.6, 0.75])
    assert decision.checks["central_seeds"] == 2
    assert "the mean of 2 seeds" in decision.reasons[0]


def test_baselines_are_reproducible_and_keep_their_best_validation_epoch(
    tiny_raw: Path, tmp_path: Path
) -> None:
    # Prepare: the tiny partitions; 4 epochs, two centralized seeds
    raw = raw_params()
    for stage in ("train_centralized", "train_local"):
        raw["profiles"]["tiny"][stage]["epochs"] = 4
    cfg = config_from_dict(raw)
    assert cfg.train_centralized.seeds == 2
    parts = partition(cfg, tiny_raw, tmp_path)
    task = get_task(cfg.base.task, cfg)
    val = task.load_dataset(split_dirs(hospital_dirs(parts), "val"))
    # Execute: the centralized stage twice, the local stage once
    runs = [
        train_centralized.run(
            cfg,
            {"partitions": parts},
            {"model": tmp_path / f"c{i}", "metrics": tmp_path / "c.json"},
        )
        for i in (0, 1)
    ]
    local = train_local.run(
        cfg, {"partitions": parts}, {"models": tmp_path / "l", "metrics": tmp_path / "l.json"}
    )
    # Assert: same seed, same weights (both seeds' models)
    for rel in ("model.pt", "seed_43/model.pt"):
        a, b = (torch.load(tmp_path / f"c{i}" / rel)["state_dict"] for i in (0, 1))
        assert all(torch.equal(a[k], b[k]) for k in a), rel
    # ... the seeds differ, and each kept the epoch of its best validation score
    assert [s["seed"] for s in runs[0]["seeds"]] == [42, 43]
    for seed in runs[0]["seeds"]:
        curve = seed["selection"]["val_curve"]
        assert len(curve) == 4 and seed["selection"]["epoch"] == 1 + curve.index(max(curve))
    # (seed 43 peaks before its last epoch here: the saved model is that epoch's)
    saved = load_model(tmp_path / "c0" / "seed_43" / "model.pt", cfg)
    curve = runs[0]["seeds"][1]["selection"]["val_curve"]
    assert task.evaluate(saved, val)[task.primary_metric] == pytest.approx(max(curve))
    for hospital, metrics in local.items():
        curve = metrics["selection"]["val_curve"]
        assert metrics["selection"]["epoch"] == 1 + curve.index(max(curve)), hospital
        assert metrics["val"][task.primary_metric] == pytest.approx(max(curve))
