"""The public GAN: a DCGAN pretrained on a public archive of abdominal CT slices, never a fundus.

The FedGAN seed pretrains on ≈3 M grayscale abdominal CT slices (other anatomy, similar
images: grayscale, a bright object on black) before federated fine-tuning. PrivFed's archive is
:func:`public_slices`: seeded synthetic axial slices at five anatomical levels (liver dome,
liver and spleen, kidneys, lower abdomen, pelvis), which play the part of the conditional GAN's
five classes, so the grade embeddings start as "which of five kinds of image" rather than noise.
Slices go through the task's own preprocessing (:func:`.transforms.preprocess`),
and the GAN is trained by the task's own :meth:`RetinaTask.fit` without DP (public data costs no
privacy). A GAN has no validation score to pick an epoch by, so the last epoch is kept. Cached
by :func:`privfed.public.cached_build`: every stage, the ServerApp and each SuperNode start from
the same weights.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfed.public import (
    Pretrained,
    PublicModel,
    built_public_model,
    one_thread_seeded,
    write_public_model,
)

if TYPE_CHECKING:
    from pathlib import Path

    from privfed.tasks.base import Task

__all__ = ["LEVELS", "public_model", "public_slices", "render_slice"]

#: The archive's seed: its own, unrelated to any hospital's (``base.seed``).
PUBLIC_SEED = 20260
#: Anatomical levels of the archive's slices: the conditional GAN's five classes in pretraining.
LEVELS = ("liver dome", "liver and spleen", "kidneys", "lower abdomen", "pelvis")
#: ``model.retina`` keys the public build does not read (training on hospitals' images).
NOT_PRETRAINING = {
    "baseline_epochs",
    "dp_batch_size",
    "dp_lr",
    "dp_max_grad_norm",
    "eval_samples",
    "evaluator_epochs",
    "fake_grades",  # hospitals' label skew: the archive's levels are dealt evenly
}


def _ellipse(
    xx: np.ndarray, yy: np.ndarray, x: float, y: float, a: float, b: float, angle: float = 0.0
) -> np.ndarray:
    """Boolean mask of an ellipse centred at ``(x, y)`` with half-axes ``a, b``, rotated."""
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - x) * c + (yy - y) * s
    v = -(xx - x) * s + (yy - y) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def render_slice(level: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial abdominal CT slice at ``level`` (0-4), ``float64 [size, size]`` in [0, 1].

    Air is black; the body an ellipse with a fat rim; the spine and aorta at the back; the
    organs of the level (liver, spleen, stomach gas, kidneys, bowel loops, iliac bones,
    bladder); a soft-tissue window that varies between scanners; quantum noise.
    """
    from scipy.ndimage import gaussian_filter

    if level not in range(len(LEVELS)):
        raise ValueError(f"level={level} must be in 0..{len(LEVELS) - 1}")
    c = (np.arange(size) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(c, c)
    j = functools.partial(rng.normal, 0.0)
    body_a, body_b = 0.82 + j(0.05), 0.6 + j(0.05)
    tilt = j(0.05)
    body = _ellipse(xx, yy, 0, 0.05, body_a, body_b, tilt)
    img = np.zeros((size, size))
    img[body] = 0.25  # subcutaneous fat
    img[_ellipse(xx, yy, 0, 0.05, body_a - 0.07, body_b - 0.07, tilt)] = 0.45  # muscle, viscera
    spine_y = 0.05 + body_b - 0.3
    img[_ellipse(xx, yy, j(0.02), spine_y, 0.12, 0.1)] = 0.9  # vertebral body
    img[_ellipse(xx, yy, j(0.02), spine_y + 0.13, 0.04, 0.07)] = 0.85  # spinous process
    img[_ellipse(xx, yy, 0.05 + j(0.02), spine_y - 0.15, 0.045, 0.045)] = 0.65  # aorta
    organs: list[tuple[float, float, float, float, float]] = []  # x, y, a, b, intensity
    if level <= 2:
        liver = (0.62, 0.5, 0.35)[level]
        organs.append((-0.35, -0.05, liver, liver * 0.8, 0.58))
    if level in (1, 2):
        organs.append((0.5, 0.05, 0.18, 0.25, 0.55))  # spleen
    if level <= 1:
        organs.append((0.2, -0.2, 0.18, 0.13, 0.02))  # stomach gas
    if level in (2, 3):
        for side in (-1, 1):  # kidneys: cortex, then the darker sinus
            organs.append((side * 0.32, spine_y - 0.05, 0.13, 0.18, 0.62))
            organs.append((side * 0.3, spine_y - 0.05, 0.05, 0.08, 0.35))
    if level >= 3:
        for _ in range(int(rng.integers(4, 9))):  # bowel loops, some with gas
            organs.append(
                (
                    rng.uniform(-0.5, 0.5),
                    rng.uniform(-0.4, 0.1),
                    rng.uniform(0.06, 0.12),
                    rng.uniform(0.06, 0.12),
                    0.05 if rng.random() < 0.4 else 0.5,
                )
            )
    if level == 4:
        for side in (-1, 1):  # iliac wings
            organs.append((side * 0.5, spine_y - 0.1, 0.22, 0.08, 0.88))
        organs.append((0.0, -0.25, 0.2, 0.16, 0.32))  # bladder
    for x, y, a, b, value in organs:
        img[_ellipse(xx, yy, x + j(0.03), y + j(0.03), a * (1 + j(0.08)), b * (1 + j(0.08)))] = (
            value
        )
    window = rng.uniform(0.8, 1.25)  # the scanner's soft-tissue window
    img = gaussian_filter(img, sigma=size / 128) + rng.normal(0, 0.02, img.shape)
    img = np.clip((img - 0.45) * window + 0.45, 0.0, 1.0)
    return np.where(body, img, 0.0)


def public_slices(n: int, *, size: int, seed: int = PUBLIC_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` slices ``float64 [n, size, size]`` in [0, 1] and their levels, levels dealt evenly."""
    rng = np.random.default_rng(seed)
    levels = np.arange(n) % len(LEVELS)
    rng.shuffle(levels)
    return np.stack([render_slice(int(v), size, rng) for v in levels]), levels


def _settings(task: Task) -> dict[str, Any]:
    """What the public build depends on: the GAN, its preprocessing, the archive's size."""
    m = task.cfg.model.retina
    return {
        "model": m.model_dump(mode="json", exclude=NOT_PRETRAINING),
        "seed": PUBLIC_SEED,
        "init_seed": task.cfg.base.seed,  # build_model's initial weights
    }


def _build(settings: dict[str, Any], task: Task, folder: Path) -> None:
    """Render the archive, preprocess it as fundus images are, train the GAN, keep the last."""
    from torch.utils.data import TensorDataset

    from privfed.tasks.retina.transforms import preprocess_as
    from privfed.training import FitPlan

    m = task.cfg.model.retina
    # rendered at 2x and binned down by the shared preprocessing, as a 2x fundus camera is
    raw, levels = public_slices(m.public_images, size=2 * m.image_size)
    images = np.stack([preprocess_as(x, m) for x in raw])
    archive = TensorDataset(
        torch.from_numpy(images)[:, None], torch.from_numpy(levels).to(torch.long)
    )
    with one_thread_seeded(PUBLIC_SEED):
        model = task.build_model()  # seeded by base.seed, which the key therefore holds
        result = task.fit(
            model,
            archive,
            FitPlan(
                epochs=m.public_epochs,
                batch_size=m.batch_size,
                lr=m.lr,
                seed=PUBLIC_SEED,
                label="public GAN (CT slices)",
            ),
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    write_public_model(
        folder,
        Pretrained(state=state, score=result.train_loss, epoch=m.public_epochs),
        {
            "settings": settings,
            "images": len(archive),
            "levels": list(LEVELS),
            "public_discriminator_loss": result.train_loss,
        },
    )


def public_model(task: Task) -> PublicModel:
    """The public GAN for the task's ``model.retina`` settings, built once per cache."""
    from privfed.tasks.retina import augment, model, transforms
    from privfed.tasks.retina import task as task_module

    settings = _settings(task)
    # every module the build's fit runs: a change to one of them is a new public GAN
    modules = (augment, model, transforms, task_module, inspect.getmodule(_build))
    build = functools.partial(_build, settings, task)
    return built_public_model("retina-public", settings, modules, build)  # type: ignore[arg-type]
