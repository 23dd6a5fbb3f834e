"""Seeded synthetic fundus photographs, one folder of PNGs and a labels CSV per hospital.

Each image is one patient's eye: a round field of view, the optic disc (bright, with a paler
cup), the macula (dark, fovea at its centre), a vessel tree branching out of the disc in four
arcades, and lesions whose kind and count follow the diabetic-retinopathy grade:

- 0 none;
- 1 mild: microaneurysms (small dark dots);
- 2 moderate: more microaneurysms, blot haemorrhages, hard exudates (bright yellow specks);
- 3 severe: many haemorrhages in every quadrant, cotton-wool spots (pale fluffy patches);
- 4 proliferative: all of the above and new vessels (a tangle of fine vessels near the disc).

Hospitals differ in their camera (resolution, illumination level and tilt, vignetting, blur,
contrast, sensor noise) and in case mix (each hospital's grade distribution is drawn around a
screening population's, so some see far more advanced disease than others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privfed.tasks.retina.layout import IMAGE_COLUMN, LABEL_COLUMN, LABELS_FILE

__all__ = ["GRADES", "Camera", "camera_for", "generate_hospitals", "render_fundus"]

#: Diabetic-retinopathy grades (ICDR scale).
GRADES = ("none", "mild", "moderate", "severe", "proliferative")
#: A screening population's grade distribution, the centre of every hospital's case mix.
_POPULATION = np.array([0.40, 0.20, 0.18, 0.12, 0.10])


@dataclass(frozen=True)
class Camera:
    """One hospital's fundus camera."""

    size: int  # stored pixels per side
    brightness: float  # overall illumination (1 = nominal)
    tilt: tuple[float, float]  # illumination gradient across the field
    vignetting: float  # darkening towards the rim of the field of view
    blur: float  # Gaussian blur sigma in units of 1/256 of the image side
    contrast: float  # gamma of the stored intensities
    noise: float  # sensor noise sd (0-1 intensities)


def camera_for(index: int, *, image_size: int, rng: np.random.Generator) -> Camera:
    """Hospital ``index``'s camera: resolution cycles 1x, 1.5x, 2x; the rest is drawn."""
    factor = (1.0, 1.5, 2.0)[index % 3]
    return Camera(
        size=int(round(image_size * factor)),
        brightness=float(rng.uniform(0.75, 1.2)),
        tilt=(float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25))),
        vignetting=float(rng.uniform(0.1, 0.5)),
        blur=float(rng.uniform(0.5, 2.5)),
        contrast=float(rng.uniform(0.8, 1.3)),
        noise=float(rng.uniform(0.005, 0.03)),
    )


def _blob(
    canvas: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    *,
    x: float,
    y: float,
    radius: float,
    amount: float,
) -> None:
    """Add a Gaussian blob (``amount`` at its centre) to ``canvas`` in place."""
    canvas += amount * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))


def _vessel_tree(
    size: int, disc: tuple[float, float], side: float, rng: np.random.Generator
) -> np.ndarray:
    """A vessel map in [0, 1]: four arcades out of the disc, each a branching random walk."""
    from PIL import Image, ImageDraw

    scale = 4  # draw at 4x and bin down: anti-aliased vessels
    big = size * scale
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)

    def to_px(px: float, py: float) -> tuple[float, float]:
        return ((px + 1) / 2 * big, (py + 1) / 2 * big)

    # (heading, width): temporal arcades bow around the macula, nasal ones go the other way
    toward_macula = math.pi if side > 0 else 0.0
    stems = [
        (toward_macula - 0.6, 1.0),
        (toward_macula + 0.6, 1.0),
        (toward_macula + math.pi - 0.5, 0.7),
        (toward_macula + math.pi + 0.5, 0.7),
    ]
    stack = [(disc[0], disc[1], heading, width, 0) for heading, width in stems]
    while stack:
        x, y, heading, width, depth = stack.pop()
        # temporal arcades curve away from the horizontal meridian, around the macula
        bend = 0.07 * (1 if math.sin(heading) >= 0 else -1) * (1 if side > 0 else -1)
        for _ in range(int(rng.integers(10, 18))):
            heading += bend * (-1 if math.cos(heading) * side < 0 else 1) + rng.normal(0, 0.12)
            nx, ny = x + 0.055 * math.cos(heading), y + 0.055 * math.sin(heading)
            if nx * nx + ny * ny > 0.95:
                break
            w = max(1, int(round(width * big / 90)))
            draw.line([to_px(x, y), to_px(nx, ny)], fill=255, width=w)
            x, y = nx, ny
            if depth < 3 and rng.random() < 0.18:
                stack.append(
                    (
                        x,
                        y,
                        heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0),
                        width * 0.6,
                        depth + 1,
                    )
                )
            width *= 0.97
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr.reshape(size, scale, size, scale).mean(axis=(1, 3))


def render_fundus(grade: int, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """One RGB fundus image, ``uint8 [size, size, 3]``, showing DR ``grade`` (0-4)."""
    from scipy.ndimage import gaussian_filter

    if grade not in range(len(GRADES)):
        raise ValueError(f"grade={grade} must be in 0..4")
    size = camera.size
    c = (np.arange(size) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(c, c)
    r2 = xx**2 + yy**2
    fov = r2 <= 0.92**2

    side = 1.0 if rng.random() < 0.5 else -1.0  # right or left eye: disc right or left
    disc = (side * rng.uniform(0.38, 0.48), rng.uniform(-0.08, 0.08))
    macula = (disc[0] - side * rng.uniform(0.48, 0.56), disc[1] + rng.uniform(-0.04, 0.04))

    # background: the red fundus glow, brighter in the middle
    base = 0.55 + 0.1 * rng.normal() * 0.3 - 0.15 * r2
    canvas = np.broadcast_to(base, (size, size)).astype(np.float64).copy()
    _blob(canvas, xx, yy, x=macula[0], y=macula[1], radius=0.16, amount=-0.18)
    _blob(canvas, xx, yy, x=macula[0], y=macula[1], radius=0.04, amount=-0.1)
    _blob(canvas, xx, yy, x=disc[0], y=disc[1], radius=0.075, amount=0.45)
    _blob(canvas, xx, yy, x=disc[0], y=disc[1], radius=0.035, amount=0.25)
    canvas -= 0.3 * _vessel_tree(size, disc, side, rng)

    def spot() -> tuple[float, float]:
        while True:
            x, y = rng.uniform(-0.8, 0.8, size=2)
            if x * x + y * y < 0.75 and (x - disc[0]) ** 2 + (y - disc[1]) ** 2 > 0.02:
                return float(x), float(y)

    # lesions: counts grow with the grade; sizes are relative to the field, so they survive
    # binning to small grids as darker or brighter patches
    counts = {
        "microaneurysm": (0, 6, 12, 16, 16)[grade],
        "haemorrhage": (0, 0, 4, 12, 14)[grade],
        "exudate": (0, 0, 6, 12, 14)[grade],
        "cotton_wool": (0, 0, 0, 4, 6)[grade],
    }
    for _ in range(rng.poisson(counts["microaneurysm"])):
        x, y = spot()
        _blob(canvas, xx, yy, x=x, y=y, radius=0.02, amount=-0.45)
    for _ in range(rng.poisson(counts["haemorrhage"])):
        x, y = spot()
        _blob(canvas, xx, yy, x=x, y=y, radius=rng.uniform(0.035, 0.06), amount=-0.4)
    for _ in range(rng.poisson(counts["exudate"])):
        x, y = spot()
        _blob(canvas, xx, yy, x=x, y=y, radius=rng.uniform(0.02, 0.035), amount=0.5)
    for _ in range(rng.poisson(counts["cotton_wool"])):
        x, y = spot()
        _blob(canvas, xx, yy, x=x, y=y, radius=rng.uniform(0.05, 0.08), amount=0.3)
    if grade == 4:  # new vessels: a tangle of short fine curls on and near the disc
        from PIL import Image, ImageDraw

        img = Image.new("L", (size * 4, size * 4), 0)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(6, 10))):
            x = disc[0] + rng.normal(0, 0.08)
            y = disc[1] + rng.normal(0, 0.08)
            heading = rng.uniform(0, 2 * math.pi)
            for _ in range(8):
                heading += rng.normal(0, 0.9)
                nx, ny = x + 0.03 * math.cos(heading), y + 0.03 * math.sin(heading)
                draw.line(
                    [
                        ((x + 1) * size * 2, (y + 1) * size * 2),
                        ((nx + 1) * size * 2, (ny + 1) * size * 2),
                    ],
                    fill=255,
                    width=max(2, size // 24),
                )
                x, y = nx, ny
        nv = np.asarray(img, dtype=np.float32).reshape(size, 4, size, 4).mean(axis=(1, 3))
        canvas -= 0.5 * nv / 255.0

    # the camera: illumination, vignetting, blur, contrast, noise
    canvas *= camera.brightness * (1 + camera.tilt[0] * xx + camera.tilt[1] * yy)
    canvas *= 1 - camera.vignetting * r2
    canvas = gaussian_filter(canvas, sigma=camera.blur * size / 256)
    canvas = np.clip(canvas, 0, 1) ** camera.contrast
    canvas += rng.normal(0, camera.noise, size=canvas.shape)
    canvas = np.where(fov, np.clip(canvas, 0, 1), 0.0)
    # a fundus photograph is red-orange: red carries most of the light, blue little
    rgb = np.stack([canvas, 0.55 * canvas, 0.25 * canvas], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def _case_mix(rng: np.random.Generator) -> np.ndarray:
    """One hospital's grade distribution around the population's (every grade > 0)."""
    mix = rng.dirichlet(_POPULATION * 8) + 0.02
    return mix / mix.sum()


def generate_hospitals(
    hospitals: Sequence[str],
    out_dir: Path,
    *,
    seed: int,
    images_per_hospital: int,
    image_size: int,
) -> dict[str, Any]:
    """Write ``<out_dir>/<hospital>/<image_id>.png`` and ``labels.csv`` for each hospital.

    Returns the manifest's ``counts`` and each hospital's ``cameras`` and ``case_mix``.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    counts, cameras, mixes = {}, {}, {}
    for index, hospital in enumerate(hospitals):
        rng = np.random.default_rng([seed, index, 19])
        camera = camera_for(index, image_size=image_size, rng=rng)
        mix = _case_mix(rng)
        grades = rng.choice(len(GRADES), size=images_per_hospital, p=mix)
        folder = out_dir / hospital
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, grade in enumerate(grades):
            image_id = f"{hospital}_{i:05d}"
            pixels = render_fundus(int(grade), camera, rng)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{image_id}.png")
            rows.append({IMAGE_COLUMN: f"{image_id}.png", LABEL_COLUMN: int(grade)})
        pd.DataFrame(rows).to_csv(folder / LABELS_FILE, index=False)
        counts[hospital] = len(rows)
        cameras[hospital] = camera.__dict__ | {"tilt": list(camera.tilt)}
        mixes[hospital] = [round(float(p), 4) for p in mix]
    return {"counts": {"images": counts}, "cameras": cameras, "case_mix": mixes}
