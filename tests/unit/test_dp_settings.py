"""DP-SGD's own settings: each task's defaults, the privacy section's overrides, and the noise
calibrated for exactly the steps they imply (by the accountant that decides ε)."""

from __future__ import annotations

import math

import pytest

from privfed.config import config_from_dict
from privfed.federated.client import _noise_multiplier
from privfed.privacy import noise_multiplier_for_target
from privfed.tasks import get_task
from privfed.training import dp_batch_size, dp_local_epochs, dp_lr, dp_max_grad_norm
from tests.conftest import raw_params


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        # (batch, step, clipping): readmission's model.dp_* in the tiny profile, the table's
        # model.tabular, notes' model.notes (tiny batch 8), model.segmentation (tiny batch 4)
        ("readmission", (32, 0.02, 3.0)),
        ("tabular", (32, 0.05, 0.3)),
        ("notes", (8, 0.01, 0.05)),
        ("segmentation", (4, 0.003, 1.0)),
    ],
)
def test_each_task_has_dp_defaults_of_its_own(task: str, expected: tuple) -> None:
    cfg = config_from_dict(raw_params(base={"task": task}))
    t = get_task(task, cfg)
    assert (dp_batch_size(t, cfg), dp_lr(t, cfg), dp_max_grad_norm(t, cfg)) == expected
    assert dp_local_epochs(cfg) == 1


def test_the_privacy_section_overrides_every_task() -> None:
    cfg = config_from_dict(
        raw_params(
            base={"task": "tabular"},
            privacy={"batch_size": 7, "lr": 0.5, "max_grad_norm": 2.0, "local_epochs": 3},
        )
    )
    t = get_task("tabular", cfg)
    assert (dp_batch_size(t, cfg), dp_lr(t, cfg), dp_max_grad_norm(t, cfg)) == (7, 0.5, 2.0)
    assert dp_local_epochs(cfg) == 3


def test_noise_is_calibrated_for_the_dp_schedule_by_the_deciding_accountant() -> None:
    # Prepare: 100 training patients, DP batch 32 -> 4 steps per epoch (sampling rate 1/4)
    cfg = config_from_dict(raw_params(privacy={"local_epochs": 2}))
    per_epoch = math.ceil(100 / 32)
    steps = cfg.train_federated.rounds * 2 * per_epoch
    # Execute
    sigma = _noise_multiplier(cfg, 100)
    # Assert: PRV for this schedule, not RDP and not the non-DP batch / epochs
    assert sigma == pytest.approx(
        noise_multiplier_for_target(
            target_epsilon=cfg.privacy.target_epsilon,
            delta=cfg.privacy.delta,
            sample_rate=1 / per_epoch,
            steps=steps,
            accountant="prv",
        )
    )
    rdp = noise_multiplier_for_target(
        target_epsilon=cfg.privacy.target_epsilon,
        delta=cfg.privacy.delta,
        sample_rate=1 / per_epoch,
        steps=steps,
        accountant="rdp",
    )
    assert sigma < rdp
