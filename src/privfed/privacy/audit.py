"""Membership-inference audit: can an attacker tell a training patient from an unseen one?

DP-SGD's ε is an upper bound on what a model leaks about any one patient; this module measures
a lower bound, by running attacks that only see the model's loss on a patient. An
(ε, δ)-DP model caps every attack at TPR ≤ e^ε·FPR + δ, so a model that leaks more than its
ε allows points at a bug in the DP pipeline, and a non-DP model shows what DP buys.

How the evaluate stage calls :func:`membership_audit`, for each model:

- ``members``: the hospitals' training splits (the data the model was fitted on);
- ``nonmembers``: the hospitals' test splits (same population, never trained on);
- ``reference``: the hospitals' validation splits, the attacker's "population data": also never
  trained on, and disjoint from the evaluated non-members, so the attack is not calibrated on
  the very examples it is scored on.

Members and non-members are subsampled to equal counts, so both metrics read on a balanced set:

- ``auroc``: the probability that a random member scores above a random non-member. 0.5 means
  the attack cannot tell them apart (a coin flip; what a perfectly private model gives), 1.0
  that it separates them perfectly. Below 0.5 is noise on small sets, not "negative leakage".
- ``tpr_at_1pct_fpr``: the fraction of members caught while wrongly accusing at most 1% of
  non-members. Carlini et al. (2022) argue this is the number that matters: an attack that is
  sure about a few patients is a privacy harm even when its AUROC is near 0.5. With fewer
  than 100 non-members it is the TPR at zero false positives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from torch.utils.data import Dataset, Subset, TensorDataset

if TYPE_CHECKING:
    from torch import nn

    from privfed.tasks.base import Task

__all__ = [
    "dataset_labels",
    "lira_offline_attack",
    "lira_offline_scores",
    "logit_confidence",
    "loss_threshold_attack",
    "membership_audit",
    "tpr_at_fpr",
]

#: The false-positive rate the audit reports the true-positive rate at.
REPORTED_FPR = 0.01
#: Floor on a fitted standard deviation: a reference class whose losses are all equal (e.g. all
#: clipped at ``min_loss``) would otherwise give a zero-width Gaussian and NaN scores.
_MIN_SIGMA = 1e-6


def _as_losses(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s), e.g. {array[bad][0]!r}"
        )
    return array


def _as_labels(values: ArrayLike, name: str, size: int) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) like its losses, got {array.shape}")
    return array


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """The largest true-positive rate at a threshold whose false-positive rate is ≤ ``fpr``.

    Read off :func:`sklearn.metrics.roc_curve`'s points without drawing lines between them: a
    straight segment would need a randomised threshold, and the conservative reading is the one
    an auditor can defend. ``labels`` are 1 for members (positives), 0 for non-members.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr!r}")
    labels = np.asarray(labels)
    if np.unique(labels).size != 2:
        raise ValueError(f"labels must hold both classes (0 and 1), got {np.unique(labels)}")
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tprs[fprs <= fpr].max())  # roc_curve always starts at (0, 0)


def _attack_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    labels = np.r_[np.ones(member_scores.size), np.zeros(nonmember_scores.size)]
    scores = np.r_[member_scores, nonmember_scores]
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "tpr_at_1pct_fpr": tpr_at_fpr(labels, scores, REPORTED_FPR),
    }


def loss_threshold_attack(
    member_losses: ArrayLike, nonmember_losses: ArrayLike
) -> dict[str, float]:
    """Yeom et al. (2018): call an example a member when its loss is low (score = -loss).

    The baseline every audit reports: it needs nothing but the model, and any gap between train
    and test loss shows up in it.
    """
    members = _as_losses(member_losses, "member_losses")
    nonmembers = _as_losses(nonmember_losses, "nonmember_losses")
    return _attack_metrics(-members, -nonmembers)


def logit_confidence(losses: ArrayLike, *, min_loss: float = 1e-12) -> np.ndarray:
    """φ = log(p / (1 - p)) with p = exp(-loss): Carlini et al.'s logit-scaled confidence.

    For cross-entropy p is the probability of the true class. It is squeezed against 1 exactly
    where members sit, and a Gaussian fits it badly there; its logit is close to Gaussian, which
    the likelihood-ratio test assumes. Computed as -loss - log(1 - exp(-loss)) with ``expm1`` so
    tiny losses stay exact; losses are clipped below at ``min_loss`` because a loss of 0 (p = 1)
    would make φ infinite. For a loss that is no negative log-likelihood (e.g. MSE) exp(-loss)
    is not a probability, but φ is still a decreasing function of the loss that stretches its
    small end.
    """
    if not min_loss > 0:
        raise ValueError(f"min_loss must be > 0, got {min_loss!r}")
    loss = np.maximum(_as_losses(losses, "losses"), min_loss)
    return -loss - np.log(-np.expm1(-loss))


def _fit(phi: np.ndarray) -> tuple[float, float]:
    return float(phi.mean()), max(float(phi.std(ddof=1)), _MIN_SIGMA)


def lira_offline_scores(
    losses: ArrayLike,
    reference_losses: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    reference_labels: ArrayLike | None = None,
    min_loss: float = 1e-12,
) -> np.ndarray:
    """Offline LiRA membership scores from population data instead of shadow models.

    Fits N(μ_out, σ_out) to the logit confidence φ (:func:`logit_confidence`) of ``reference``
    non-members and scores each example by -log P_out(Φ ≥ φ): the negative log p-value of the
    one-sided test "φ comes from the non-member distribution", against the alternative that it
    is larger, as training raises members' confidence. This is Carlini et al.'s (2022) offline
    variant; a likelihood ratio against a shifted "in" Gaussian would need a shift that only
    shadow models trained on the example can estimate, so it is not used. ``logsf`` keeps the
    score exact deep in the members' tail, where low-FPR thresholds are read.

    With ``labels`` and ``reference_labels`` (integer classes), μ and σ are fitted per class,
    as Ye et al.'s (2022) population attack does with class-dependent thresholds; a class with
    fewer than 2 reference examples falls back to the fit over the whole reference set.
    """
    phi = logit_confidence(losses, min_loss=min_loss)
    ref_phi = logit_confidence(reference_losses, min_loss=min_loss)
    if ref_phi.size < 2:
        raise ValueError(f"reference_losses needs at least 2 examples, got {ref_phi.size}")
    if (labels is None) != (reference_labels is None):
        raise ValueError("give both labels and reference_labels, or neither")
    mu = np.full_like(phi, _fit(ref_phi)[0])
    sigma = np.full_like(phi, _fit(ref_phi)[1])
    if labels is not None:
        labels = _as_labels(labels, "labels", phi.size)
        reference_labels = _as_labels(reference_labels, "reference_labels", ref_phi.size)
        for cls in np.unique(labels):
            in_class = reference_labels == cls
            if in_class.sum() >= 2:
                mu[labels == cls], sigma[labels == cls] = _fit(ref_phi[in_class])
    return -stats.norm.logsf(phi, loc=mu, scale=sigma)


def lira_offline_attack(
    member_losses: ArrayLike,
    nonmember_losses: ArrayLike,
    reference_losses: ArrayLike,
    *,
    member_labels: ArrayLike | None = None,
    nonmember_labels: ArrayLike | None = None,
    reference_labels: ArrayLike | None = None,
) -> dict[str, float]:
    """Offline LiRA (:func:`lira_offline_scores`) on members vs non-members.

    ``reference_losses`` must come from non-members disjoint from ``nonmember_losses``.

    Without labels this adds nothing to :func:`loss_threshold_attack`: one Gaussian for
    everybody makes the score a strictly increasing function of φ, which strictly decreases
    with the loss, so both attacks rank examples the same way and report the same numbers. It
    is reported anyway because with class labels the Gaussian is fitted per class, and then it
    differs: each example is compared with its own class's non-members, so a member of a hard
    class (high loss, but low for that class) is caught, and an easy class's non-members (low
    loss, but typical for that class) are not accused. Keeping the column for tasks without
    class labels (regression) keeps every task's report in the same shape.
    """
    labelled = [x is not None for x in (member_labels, nonmember_labels, reference_labels)]
    if any(labelled) and not all(labelled):
        raise ValueError(
            "give member_labels, nonmember_labels and reference_labels together, or none"
        )
    members = _as_losses(member_losses, "member_losses")
    nonmembers = _as_losses(nonmember_losses, "nonmember_losses")
    labels = None
    if all(labelled):
        labels = np.r_[
            _as_labels(member_labels, "member_labels", members.size),
            _as_labels(nonmember_labels, "nonmember_labels", nonmembers.size),
        ]
    scores = lira_offline_scores(
        np.r_[members, nonmembers],
        reference_losses,
        labels=labels,
        reference_labels=reference_labels,
    )
    return _attack_metrics(scores[: members.size], scores[members.size :])


def dataset_labels(dataset: Dataset) -> np.ndarray | None:
    """Each item's last element when it is an integer class label, else None.

    The tasks' datasets are ``TensorDataset``s whose last tensor is the target: int64 for
    classification (per-class LiRA applies), float for regression (it does not).
    """
    if isinstance(dataset, Subset):
        labels = dataset_labels(dataset.dataset)
        return None if labels is None else labels[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, TensorDataset):
        last = dataset.tensors[-1].detach().cpu().numpy()
    else:
        items = [dataset[i] for i in range(len(dataset))]
        if not all(isinstance(item, tuple | list) and len(item) for item in items):
            return None
        last = np.asarray([np.asarray(item[-1]) for item in items])
    return last if last.ndim == 1 and last.dtype.kind in "iu" else None


def _subsample(dataset: Dataset, n: int, rng: np.random.Generator) -> Dataset:
    return Subset(dataset, np.sort(rng.permutation(len(dataset))[:n]).tolist())


def membership_audit(
    task: Task,
    model: nn.Module,
    members: Dataset,
    nonmembers: Dataset,
    reference: Dataset,
    *,
    labels_fn: Callable[[Dataset], np.ndarray | None] | None = None,
    max_examples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Both attacks on ``model``: training data vs unseen data, calibrated on ``reference``.

    Members and non-members are subsampled (seeded) to the same count, the smaller of the two
    capped at ``max_examples``, so the AUROC is read on a balanced set and the cost is bounded;
    the reference set is capped at ``max_examples`` too. ``labels_fn`` gives a dataset's integer
    class labels or None (default :func:`dataset_labels`); per-class LiRA runs only when it
    gives labels for all three sets.
    """
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples!r}")
    n = min(len(members), len(nonmembers), max_examples)
    if n < 1:
        raise ValueError(
            f"membership_audit needs members and non-members, got {len(members)} and "
            f"{len(nonmembers)}"
        )
    if len(reference) < 2:
        raise ValueError(f"reference needs at least 2 examples, got {len(reference)}")
    rng = np.random.default_rng(seed)
    sets = {
        "members": _subsample(members, n, rng),
        "nonmembers": _subsample(nonmembers, n, rng),
        "reference": _subsample(reference, min(len(reference), max_examples), rng),
    }
    losses = {k: task.example_losses(model, ds) for k, ds in sets.items()}
    labels = {k: (labels_fn or dataset_labels)(ds) for k, ds in sets.items()}
    if any(v is None for v in labels.values()):
        labels = dict.fromkeys(labels)
    return {
        "loss_threshold": loss_threshold_attack(losses["members"], losses["nonmembers"]),
        "lira_offline": lira_offline_attack(
            losses["members"],
            losses["nonmembers"],
            losses["reference"],
            member_labels=labels["members"],
            nonmember_labels=labels["nonmembers"],
            reference_labels=labels["reference"],
        ),
        "members": n,
        "nonmembers": n,
    }
