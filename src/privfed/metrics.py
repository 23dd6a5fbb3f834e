"""Classification metrics that stay defined on small, skewed hospital test sets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    recall_score,
    roc_auc_score,
)

__all__ = ["classification_metrics", "confusion_counts", "macro_ovr_auroc", "regression_metrics"]


def macro_ovr_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes that are both present and absent in ``labels``.

    A hospital's test split may lack a class entirely; sklearn then refuses the multi-class
    score, so we average the per-class scores that are defined (NaN if none is).
    """
    scores = []
    for k in range(probs.shape[1]):
        positive = labels == k
        if positive.any() and (~positive).any():
            scores.append(roc_auc_score(positive, probs[:, k]))
    return float(np.mean(scores)) if scores else math.nan


def classification_metrics(labels: np.ndarray, probs: np.ndarray, loss: float) -> dict[str, float]:
    n_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    return {
        "loss": float(loss),
        "accuracy": float(accuracy_score(labels, preds)),
        # mean recall over the classes present (sklearn's balanced accuracy, without its
        # warning when a small hospital split lacks a class)
        "balanced_accuracy": float(
            recall_score(labels, preds, average="macro", labels=np.unique(labels), zero_division=0)
        ),
        "macro_f1": float(
            f1_score(labels, preds, average="macro", labels=list(range(n_classes)), zero_division=0)
        ),
        "macro_auroc": macro_ovr_auroc(labels, probs),
        "n": int(len(labels)),
    }


def regression_metrics(targets: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² (NaN when the targets are constant) and the squared-error loss."""
    err = preds - targets
    mse = float(np.mean(err**2)) if len(err) else math.nan
    return {
        "loss": mse,
        "mae": float(mean_absolute_error(targets, preds)) if len(err) else math.nan,
        "rmse": math.sqrt(mse) if len(err) else math.nan,
        "r2": float(r2_score(targets, preds)) if len(err) > 1 and np.ptp(targets) > 0 else math.nan,
        "n": int(len(targets)),
    }


def confusion_counts(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> dict[str, Any]:
    """``matrix[true][predicted]`` counts with class names (the form KFP's UI and MLflow show)."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, preds, labels=list(range(len(names))))
    return {"labels": list(names), "matrix": matrix.astype(int).tolist()}
