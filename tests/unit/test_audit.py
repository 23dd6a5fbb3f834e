"""Membership-inference audit: attacks on hand-built losses, and a real overfit vs DP model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from privfed.config import PrivFedConfig, config_from_dict
from privfed.privacy import epsilon_from_history, noise_multiplier_for_target
from privfed.privacy.audit import (
    dataset_labels,
    lira_offline_attack,
    lira_offline_scores,
    logit_confidence,
    loss_threshold_attack,
    membership_audit,
    tpr_at_fpr,
)
from privfed.tasks import get_task
from privfed.training import DPSettings, steps_per_epoch, train_local_pass
from tests.conftest import raw_params

# -- attacks on hand-built losses -------------------------------------------------------------


def test_loss_attack_on_hand_computed_pairs() -> None:
    # Prepare: member 0.1 and 0.2 beat all three non-members, 0.6 beats only 0.9
    members, nonmembers = [0.1, 0.2, 0.6], [0.3, 0.5, 0.9]
    # Execute
    result = loss_threshold_attack(members, nonmembers)
    # Assert: AUROC = 7/9 pairs; no false positive allowed below 1/3 FPR: threshold under 0.3
    assert result["auroc"] == pytest.approx(7 / 9)
    assert result["tpr_at_1pct_fpr"] == pytest.approx(2 / 3)


def test_clearly_lower_member_losses_are_found() -> None:
    rng = np.random.default_rng(0)
    members = rng.uniform(0.01, 0.3, size=500)
    nonmembers = rng.uniform(0.25, 3.0, size=500)
    reference = rng.uniform(0.25, 3.0, size=500)
    for result in (
        loss_threshold_attack(members, nonmembers),
        lira_offline_attack(members, nonmembers, reference),
    ):
        assert result["auroc"] > 0.98
        assert result["tpr_at_1pct_fpr"] > 0.8


def test_identical_distributions_give_a_coin_flip() -> None:
    rng = np.random.default_rng(1)
    members, nonmembers, reference = rng.gamma(2.0, 0.4, size=(3, 5000))
    for result in (
        loss_threshold_attack(members, nonmembers),
        lira_offline_attack(members, nonmembers, reference),
    ):
        assert result["auroc"] == pytest.approx(0.5, abs=0.03)  # sd under the null: 0.006
        assert result["tpr_at_1pct_fpr"] < 0.03


def test_tpr_at_fpr_reads_a_hand_computed_roc() -> None:
    # Prepare: descending scores, labels 1 1 0 1 0 0 -> ROC points (fpr, tpr):
    # (0,0) (0,1/3) (0,2/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1)
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    # Execute / Assert: the step reading, never a line between points
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(labels, scores, 0.3) == pytest.approx(2 / 3)
    assert tpr_at_fpr(labels, scores, 1 / 3) == pytest.approx(1.0)
    assert tpr_at_fpr(labels, scores, 1.0) == pytest.approx(1.0)
    # a tie makes a diagonal segment (0, 1/2) -> (1/2, 1): at FPR 1/4 the step reading is 1/2,
    # where a line drawn between the points would claim 3/4
    assert tpr_at_fpr([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], 0.25) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fpr must be in"):
        tpr_at_fpr(labels, scores, 1.5)
    with pytest.raises(ValueError, match="both classes"):
        tpr_at_fpr([1, 1], [0.1, 0.2], 0.1)


def test_logit_confidence_matches_its_definition_and_stays_finite() -> None:
    # loss = -log p: p = 0.5 -> 0, p = 0.9 -> log 9, p = 0.1 -> -log 9
    losses = [math.log(2), -math.log(0.9), -math.log(0.1)]
    np.testing.assert_allclose(logit_confidence(losses), [0.0, math.log(9), -math.log(9)])
    extremes = logit_confidence([0.0, 1e-30, 1e4])
    assert np.isfinite(extremes).all()
    assert extremes[0] == extremes[1] == pytest.approx(-math.log(1e-12))  # clipped at min_loss
    assert extremes[2] == pytest.approx(-1e4)
    with pytest.raises(ValueError, match="non-finite"):
        logit_confidence([0.1, math.nan])


def _losses_from_logit(phi: np.ndarray) -> np.ndarray:
    """Inverse of logit_confidence: loss = -log sigmoid(phi)."""
    return np.logaddexp(0.0, -phi)


def test_global_lira_ranks_like_the_loss_attack() -> None:
    """One Gaussian for everybody is a monotone transform of the loss: the same numbers."""
    rng = np.random.default_rng(2)
    members, nonmembers, reference = rng.gamma(2.0, 0.3, size=(3, 300))
    members *= 0.8
    assert lira_offline_attack(members, nonmembers, reference) == pytest.approx(
        loss_threshold_attack(members, nonmembers)
    )


def test_per_class_lira_beats_the_loss_attack_when_classes_differ_in_scale() -> None:
    # Prepare: in logit-confidence space, members sit 2 sd above non-members in both classes,
    # but class 0 is easy (out N(4, 1)) and class 1 hard (out N(-1, 1)): class 0's non-members
    # have lower losses than class 1's members, which confuses one global threshold.
    rng = np.random.default_rng(3)
    n = 2000
    cls = np.repeat([0, 1], n // 2)
    out_mu = np.where(cls == 0, 4.0, -1.0)
    members = _losses_from_logit(rng.normal(out_mu + 2.0, 1.0))
    nonmembers = _losses_from_logit(rng.normal(out_mu, 1.0))
    reference = _losses_from_logit(rng.normal(out_mu, 1.0))
    # Execute
    loss_attack = loss_threshold_attack(members, nonmembers)
    per_class = lira_offline_attack(
        members,
        nonmembers,
        reference,
        member_labels=cls,
        nonmember_labels=cls,
        reference_labels=cls,
    )
    # Assert: by hand, loss attack AUROC ≈ .5·Φ(√2) + .25 + .25·Φ(-3/√2) ≈ 0.71 and
    # per-class AUROC ≈ Φ(√2) ≈ 0.92; TPR at 1% FPR ≈ 0.24 vs 1 - Φ(2.33 - 2) ≈ 0.37
    assert loss_attack["auroc"] == pytest.approx(0.71, abs=0.03)
    assert per_class["auroc"] == pytest.approx(0.92, abs=0.02)
    assert per_class["tpr_at_1pct_fpr"] > loss_attack["tpr_at_1pct_fpr"] + 0.05


def test_a_class_without_reference_examples_uses_the_global_fit() -> None:
    # Prepare: class 2 has a single reference example, too few to fit a Gaussian
    reference = np.array([0.2, 0.4, 0.6, 0.8, 1.5])
    reference_labels = np.array([0, 0, 1, 1, 2])
    losses = np.array([0.3, 0.7, 1.0])
    labels = np.array([0, 1, 2])
    # Execute
    scores = lira_offline_scores(
        losses, reference, labels=labels, reference_labels=reference_labels
    )
    # Assert
    ref_phi = logit_confidence(reference)
    phi = logit_confidence(losses)
    class_0 = -stats.norm.logsf(phi[0], ref_phi[:2].mean(), ref_phi[:2].std(ddof=1))
    pooled = -stats.norm.logsf(phi[2], ref_phi.mean(), ref_phi.std(ddof=1))
    assert scores[0] == pytest.approx(class_0)
    assert scores[2] == pytest.approx(pooled)
    with pytest.raises(ValueError, match="or neither"):
        lira_offline_scores(losses, reference, labels=labels)


def test_dataset_labels_only_for_integer_class_targets() -> None:
    x = torch.zeros(4, 2)
    classes = TensorDataset(x, torch.tensor([2, 0, 1, 2]))
    np.testing.assert_array_equal(dataset_labels(classes), [2, 0, 1, 2])
    np.testing.assert_array_equal(dataset_labels(Subset(classes, [3, 1])), [2, 0])
    assert dataset_labels(TensorDataset(x, torch.rand(4))) is None  # regression target
    generic = [(x[i], torch.tensor(i % 2)) for i in range(4)]
    np.testing.assert_array_equal(dataset_labels(generic), [0, 1, 0, 1])


class _LossIsFirstTensor:
    """Task stand-in whose per-example loss is stored in the dataset: records what it scored."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def example_losses(self, model: nn.Module, dataset: Dataset) -> np.ndarray:
        self.sizes.append(len(dataset))
        return np.array([float(dataset[i][0]) for i in range(len(dataset))])


def test_membership_audit_balances_and_caps_the_sets() -> None:
    # Prepare: 80 members with low losses, 50 non-members, 30 reference examples
    rng = np.random.default_rng(4)

    def data(n: int, scale: float) -> TensorDataset:
        return TensorDataset(torch.from_numpy(rng.gamma(2.0, scale, n)), torch.arange(n) % 3)

    members, nonmembers, reference = data(80, 0.2), data(50, 0.5), data(30, 0.5)
    task = _LossIsFirstTensor()
    # Execute
    full = membership_audit(task, nn.Identity(), members, nonmembers, reference)
    capped = membership_audit(task, nn.Identity(), members, nonmembers, reference, max_examples=20)
    again = membership_audit(task, nn.Identity(), members, nonmembers, reference, max_examples=20)
    # Assert: min(80, 50) then the cap; the reference is capped too; seeded, so repeatable
    assert (full["members"], full["nonmembers"]) == (50, 50)
    assert (capped["members"], capped["nonmembers"]) == (20, 20)
    assert task.sizes == [50, 50, 30, 20, 20, 20, 20, 20, 20]
    assert capped == again
    assert full["loss_threshold"]["auroc"] > 0.7
    assert set(full["lira_offline"]) == {"auroc", "tpr_at_1pct_fpr"}


# -- end to end on the readmission task -------------------------------------------------------

EPOCHS, BATCH, LR = 60, 16, 0.01


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: a second thread only spins, and on a busy 2-core box costs 3-10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def readmission_thirds(tiny_raw: Path) -> tuple[PrivFedConfig, Subset, Subset, Subset]:
    """The tiny cohort (180 patients) split at random into members, non-members, reference.

    An i.i.d. split of one cohort, so only membership tells members from non-members; 60
    training patients, the size of one tiny hospital, are few enough to overfit.
    """
    cfg = config_from_dict(raw_params())
    data = get_task("readmission", cfg).load_dataset([tiny_raw])
    perm = np.random.default_rng(0).permutation(len(data)).tolist()
    third = len(data) // 3
    members, nonmembers, reference = (
        Subset(data, perm[i * third : (i + 1) * third]) for i in range(3)
    )
    return cfg, members, nonmembers, reference


def _trained(cfg: PrivFedConfig, members: Dataset, dp: DPSettings | None):
    task = get_task("readmission", cfg)
    torch.manual_seed(0)
    model = task.build_model()
    result = train_local_pass(
        task, model, members, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=0, dp=dp
    )
    return task, model, result


def test_example_losses_are_per_example_cross_entropy(readmission_thirds) -> None:
    cfg, members, _, _ = readmission_thirds
    task = get_task("readmission", cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    # Execute
    losses = task.example_losses(model, members)
    # Assert: the mode is restored, and the losses are eval-mode (no dropout) cross-entropies
    assert model.training
    *inputs, y = (t[members.indices] for t in members.dataset.tensors)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model.eval()(*inputs), y, reduction="none")
    np.testing.assert_allclose(losses, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_dp_sgd_brings_an_overfit_models_leak_towards_a_coin_flip(readmission_thirds) -> None:
    cfg, members, nonmembers, reference = readmission_thirds
    # Prepare: the same training twice, without DP and with DP-SGD at ε ≈ 1
    per_epoch = steps_per_epoch(len(members), BATCH)  # Opacus samples at rate 1/per_epoch
    sigma = noise_multiplier_for_target(
        target_epsilon=1.0, delta=1e-5, sample_rate=1 / per_epoch, steps=EPOCHS * per_epoch
    )
    task, plain, _ = _trained(cfg, members, None)
    _, private, result = _trained(cfg, members, DPSettings(noise_multiplier=sigma, max_grad_norm=1))
    assert epsilon_from_history(result.history, delta=1e-5) <= 1.0
    # Execute
    leak = membership_audit(task, plain, members, nonmembers, reference)
    dp_leak = membership_audit(task, private, members, nonmembers, reference)
    # Assert: here plain 0.867 (seeded); DP 0.43-0.58 over 8 draws (its noise is not seeded).
    # Over 10 other splits and seeds: plain 0.79-0.90, DP 0.41-0.60.
    assert leak["members"] == leak["nonmembers"] == len(members)
    assert leak["loss_threshold"]["auroc"] > 0.7
    assert leak["lira_offline"]["auroc"] > 0.7
    gap = abs(leak["loss_threshold"]["auroc"] - 0.5) - abs(dp_leak["loss_threshold"]["auroc"] - 0.5)
    assert gap > 0.1
