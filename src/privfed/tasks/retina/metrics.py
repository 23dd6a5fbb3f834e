"""Offline evaluation of a generator against real images: nothing downloads.

Every figure is computed from the model's samples and real images the evaluation already has:

- the **feature classifier** is a small CNN trained to grade DR severity on the *real
  training images of the same hospitals* as the evaluated split (for a split folder ``d``,
  the folder ``d.parent / "train"``): pooled test -> pooled training images, one hospital's
  split -> that hospital's. It is trained once per set of images (seeded) and cached on disk,
  so every model is scored in the same feature space. Its accuracy on the evaluated real
  images is ``trtr_accuracy`` (train on real, test on real);
- ``fid`` and ``kid`` (x 1000) between the classifier's penultimate features (64 values) of
  the generated and the real images; ``precision`` / ``recall`` (Kynkaanniemi et al. 2019,
  k = 3) in the same space. They compare PrivFed runs with each other, never published FIDs
  (those use Inception features);
- ``realism``: a classifier two-sample test. A fresh discriminator (same CNN) is trained
  centrally on half of the real images (label real) and half of the samples (label fake);
  ``realism`` is its mean probability "real" on the other half of the samples. 0.5: it
  cannot tell them apart; 0: every sample is spotted. The seed's "realism score" (a central
  discriminator's mean real-probability on synthetic images) read this way;
- ``tstr_accuracy``: the same CNN trained from scratch, for as many epochs, only on a
  generated training set as large as the real training images and with their exact grade mix
  (labelled with the grade each was generated for, or by the feature classifier when the
  generator is not conditional), scored on the real images; ``tstr_ratio`` = it /
  ``trtr_accuracy``;
- memorization: RMS pixel distance of each sample to its nearest real training image, and of
  each evaluated real image to its nearest training image. ``nn_ratio`` = the median of the
  first over the second (< 1: samples sit closer to training images than unseen patients
  do); ``copy_rate`` = share of samples nearer a training image than 95 % of unseen images
  are (a GAN that copies patients leaks them).

Samples use a fixed seed (``base.seed``) and the real images' grade mix, so every model is
scored on the same latent codes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from privfed.io import DataError, atomic_path

__all__ = [
    "fid",
    "generator_fid",
    "kid",
    "nearest_distances",
    "precision_recall",
    "reference_train_dirs",
    "score_generator",
    "small_cnn",
    "train_classifier",
    "train_on_synthetic",
]

log = logging.getLogger(__name__)

_FEATURES = 64
_EVALUATORS: dict[str, nn.Module] = {}


def small_cnn(num_classes: int) -> nn.Sequential:
    """Three strided convolutions with GroupNorm, global average pooling, a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1),
        nn.GroupNorm(4, 16),
        nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.GroupNorm(4, 32),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, _FEATURES, 4, stride=2, padding=1),
        nn.GroupNorm(4, _FEATURES),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(_FEATURES, num_classes),
    )


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, epochs: int, seed: int
) -> nn.Sequential:
    """:func:`small_cnn` trained with Adam (lr 1e-3, batch 32), seeded; returned in eval mode."""
    torch.manual_seed(seed)
    model = small_cnn(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    images, labels = images.detach().cpu(), labels.detach().cpu()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            opt.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def _features(model: nn.Sequential, images: torch.Tensor) -> np.ndarray:
    out = [model[:-1](images[i : i + 256].cpu()) for i in range(0, len(images), 256)]
    return torch.cat(out).double().numpy()


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(images[i : i + 256].cpu()) for i in range(0, len(images), 256)])


def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` whose arg-max grade is their label."""
    return float((_predict(model, images).argmax(1) == labels).float().mean())


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` and ``b``."""
    from scipy import linalg

    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb)
    return float(mu @ mu + np.trace(ca + cb - 2 * np.real(covmean)))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel ``(x.y / d + 1)^3`` (Bińkowski 2018)."""
    d = a.shape[1]
    kaa, kbb, kab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    return float(
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
        + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
        - 2 * kab.mean()
    )


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Share of fakes inside some real point's k-NN ball, and of reals inside a fake's."""

    def covered(ref: np.ndarray, query: np.ndarray) -> float:
        kk = min(k, len(ref) - 1)
        radii = np.sort(_pairwise(ref, ref), axis=1)[:, kk]  # column 0 is the point itself
        return float((_pairwise(query, ref) <= radii[None, :]).any(axis=1).mean())

    return covered(real, fake), covered(fake, real)


def nearest_distances(query: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """RMS pixel distance of each ``query`` image to its nearest ``ref`` image."""
    q = query.reshape(len(query), -1).double().cpu().numpy()
    r = ref.reshape(len(ref), -1).double().cpu().numpy()
    return _pairwise(q, r).min(axis=1) / np.sqrt(q.shape[1])


def reference_train_dirs(split_dirs: Sequence[Path]) -> list[Path]:
    """The training folders of the same hospitals as ``split_dirs`` (``<hospital>/train``)."""
    out = []
    for d in split_dirs:
        train = Path(d).parent / "train"
        if not train.is_dir():
            raise DataError(
                f"{d}: no sibling training folder {train}; the retina metrics grade images "
                "with a classifier trained on the same hospitals' real training images"
            )
        if train not in out:
            out.append(train)
    return out


def _digest(images: torch.Tensor, labels: torch.Tensor, *parts: object) -> str:
    h = hashlib.sha256()
    h.update(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    h.update(repr(parts).encode())
    return h.hexdigest()[:20]


def feature_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, epochs: int, seed: int
) -> nn.Sequential:
    """The severity classifier of these real training images: trained once, cached on disk."""
    from privfed.public import cache_root

    key = _digest(images, labels, epochs, seed, "retina-evaluator-v1")
    if key in _EVALUATORS:
        return _EVALUATORS[key]
    path = cache_root() / "retina-evaluator" / f"{key}.pt"
    model = small_cnn(5)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
    else:
        model = train_classifier(images, labels, num_classes=5, epochs=epochs, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
        log.info("trained the retina feature classifier on %d real images (%s)", len(labels), key)
    _EVALUATORS[key] = model
    return model


def _sampled_features(
    gan: nn.Module,
    classifier: nn.Sequential,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    samples: int,
    seed: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Seeded samples with the real images' grade mix, and both sets' classifier features."""
    gen = torch.Generator().manual_seed(seed)
    grades = real_labels[torch.randint(len(real_labels), (max(samples, 2),), generator=gen)]
    fake = gan.sample(grades, generator=gen).cpu()
    return fake, _features(classifier, real), _features(classifier, fake)


def generator_fid(
    gan: nn.Module,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    train: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    samples: int,
    epochs: int,
    seed: int,
) -> float:
    """``fid`` alone, exactly as :func:`score_generator` computes it (same samples, same
    feature classifier): what picks a baseline's epoch, without training the three small
    classifiers the other figures need."""
    classifier = feature_classifier(train, train_labels, epochs=epochs, seed=seed)
    _, real_f, fake_f = _sampled_features(gan, classifier, real, real_labels, samples, seed)
    return fid(real_f, fake_f) if len(real) > 1 else float("nan")


def synthetic_classifier(
    gan: nn.Module,
    classifier: nn.Sequential,
    train_labels: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    multiple: int = 1,
) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """:func:`small_cnn` trained only on generated images, with those images and their grades.

    The generated training set is ``multiple`` x as large as the real training set, each copy
    with its exact grade mix, and is trained as the feature classifier was, so with
    ``multiple`` 1 (the metric's definition) it and the feature classifier differ only in
    whether the training images are generated or real. A larger ``multiple`` asks what a
    consumer of shared samples gains by drawing more of them (the benchmark's
    ``--tstr-multiples``).
    """
    gen_t = torch.Generator().manual_seed(seed + 3)
    grades = train_labels.repeat(multiple)
    synth_grades = grades[torch.randperm(len(grades), generator=gen_t)]
    synth = torch.cat(
        [
            gan.sample(synth_grades[i : i + 1024], generator=gen_t).cpu()
            for i in range(0, len(synth_grades), 1024)
        ]
    )
    conditional = getattr(gan.generator, "conditional", False)
    synth_labels = synth_grades if conditional else _predict(classifier, synth).argmax(1)
    tstr = train_classifier(synth, synth_labels, num_classes=5, epochs=epochs, seed=seed + 1)
    return tstr, synth, synth_labels


def train_on_synthetic(
    gan: nn.Module,
    classifier: nn.Sequential,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    multiple: int = 1,
) -> float:
    """``tstr_accuracy``: the :func:`synthetic_classifier`'s accuracy on ``real``."""
    tstr, _, _ = synthetic_classifier(
        gan, classifier, train_labels, epochs=epochs, seed=seed, multiple=multiple
    )
    return classifier_accuracy(tstr, real, real_labels)


def score_generator(
    gan: nn.Module,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    train: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    samples: int,
    epochs: int,
    seed: int,
) -> dict[str, float]:
    """Every figure of the module docstring for ``gan`` against the ``real`` images."""
    classifier = feature_classifier(train, train_labels, epochs=epochs, seed=seed)
    fake, real_f, fake_f = _sampled_features(gan, classifier, real, real_labels, samples, seed)
    n = len(fake)
    precision, recall = precision_recall(real_f, fake_f)
    out = {
        "fid": fid(real_f, fake_f) if len(real) > 1 else float("nan"),
        "kid_x1000": 1000 * kid(real_f, fake_f) if len(real) > 1 else float("nan"),
        "precision": precision,
        "recall": recall,
        "trtr_accuracy": classifier_accuracy(classifier, real, real_labels),
    }
    out["tstr_accuracy"] = train_on_synthetic(
        gan, classifier, real, real_labels, train_labels, epochs=epochs, seed=seed
    )
    out["tstr_ratio"] = (
        out["tstr_accuracy"] / out["trtr_accuracy"] if out["trtr_accuracy"] else float("nan")
    )

    # realism: a real-vs-fake discriminator trained on halves, scored on the held-out fakes
    half_r, half_f = len(real) // 2, n // 2
    if half_r >= 1:
        x = torch.cat([real[:half_r], fake[:half_f]])
        y = torch.cat([torch.ones(half_r, dtype=torch.long), torch.zeros(half_f, dtype=torch.long)])
        disc = train_classifier(x, y, num_classes=2, epochs=epochs, seed=seed + 2)
        out["realism"] = float(_predict(disc, fake[half_f:]).softmax(1)[:, 1].mean())
    else:
        out["realism"] = float("nan")

    gen_nn = nearest_distances(fake, train)
    real_nn = nearest_distances(real, train)
    out["nn_dist_samples"] = float(np.median(gen_nn))
    out["nn_dist_real"] = float(np.median(real_nn))
    out["nn_ratio"] = out["nn_dist_samples"] / max(out["nn_dist_real"], 1e-12)
    out["copy_rate"] = float((gen_nn < np.quantile(real_nn, 0.05)).mean())
    return out
