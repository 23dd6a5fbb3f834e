"""Synthetic multimodal brain MRI with gliomas, one folder per case in the BraTS layout.

Each case is drawn on its hospital's own voxel grid, in millimetres: a head (scalp, skull, CSF),
a brain with cortex, white matter and ventricles, and a tumour with the BraTS sub-regions
(label 1 necrotic / non-enhancing core, 2 peritumoral oedema, 3 enhancing tumour). Tissue
intensities per modality follow how the tissues look in real scans: oedema bright on T2 and
FLAIR, the enhancing rim bright on T1c, necrosis dark on T1/T1c and bright on T2, CSF bright on
T2 and suppressed on FLAIR.

Hospitals differ the way scanners and referral patterns do (:class:`HospitalProfile`): gain
(intensity scale), bias field, noise, voxel size (a coarser scanner stores fewer voxels of the
same field of view), storage orientation (RAS or LPS), and the share of large tumours.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from privfed.tasks.segmentation.layout import LABEL, MODALITIES, case_file

__all__ = [
    "HospitalProfile",
    "SyntheticCase",
    "PUBLIC_SEED",
    "generate_hospitals",
    "hospital_profiles",
    "public_cases",
    "synth_case",
    "write_case",
    "write_nifti",
]

# Tissue classes of the anatomy map, and their intensity per modality (before the scanner's
# gain, bias field and noise). Relative values follow typical 1.5-3 T appearance.
_TISSUES = (
    "air",
    "scalp",
    "skull",
    "csf",
    "grey_matter",
    "white_matter",
    "ventricle",
    "oedema",
    "necrosis",
    "enhancing",
)
_INTENSITY = {
    #        air  scalp skull csf   gm    wm    vent  oed   necr  enh
    "t1": (0.0, 0.90, 0.08, 0.12, 0.55, 0.80, 0.12, 0.45, 0.22, 0.50),
    "t1ce": (0.0, 0.90, 0.08, 0.15, 0.58, 0.80, 0.15, 0.47, 0.20, 1.15),
    "t2": (0.0, 0.55, 0.05, 1.00, 0.62, 0.40, 1.00, 0.85, 0.95, 0.60),
    "flair": (0.0, 0.60, 0.05, 0.12, 0.60, 0.45, 0.10, 1.00, 0.30, 0.75),
}
_T = {name: i for i, name in enumerate(_TISSUES)}

# Per-hospital shifts cycle through these, so any federation of 2+ hospitals is heterogeneous.
_GAIN = (1000.0, 2400.0, 600.0, 1500.0)
_BIAS = (0.10, 0.35, 0.20, 0.28)
_NOISE = (0.02, 0.06, 0.04, 0.03)
_SPACING = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.5), (1.25, 1.25, 1.25), (1.0, 1.0, 1.25))
_ORIENTATION = ("RAS", "LPS", "RAS", "LPS")
_LARGE_SHARE = (0.2, 0.8, 0.5, 0.35)


@dataclass(frozen=True)
class HospitalProfile:
    """How one hospital's scanner and patients differ from the others'."""

    hospital: str
    #: Scanner gain per modality (intensity units of a tissue of relative intensity 1).
    gain: tuple[float, float, float, float]
    #: Amplitude of the multiplicative bias field (0 = flat).
    bias_strength: float
    #: Rician noise sd as a share of the gain.
    noise: float
    #: Voxel edges (mm) along the stored axes.
    spacing_mm: tuple[float, float, float]
    #: Axis codes of the stored voxel order ("RAS" or "LPS").
    orientation: str
    #: Share of large tumours (whole-tumour radius 24-36 mm; others 12-20 mm).
    large_tumour_share: float


@dataclass(frozen=True)
class SyntheticCase:
    """One case on its hospital's grid, in RAS voxel order (``write_case`` stores it).

    Images are int16 scanner units, as BraTS distributes them; the label is uint8.
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    spacing_mm: tuple[float, float, float]
    orientation: str
    tumour_type: str


def hospital_profiles(
    hospitals: Sequence[str], *, seed: int, spacing_mm: float
) -> list[HospitalProfile]:
    """Deterministic profiles: a fixed cycle of shifts, jittered per ``seed``."""
    rng = np.random.default_rng([seed, 101])
    out = []
    for i, hospital in enumerate(hospitals):
        k = i % len(_GAIN)
        gain = _GAIN[k] * float(rng.lognormal(0.0, 0.1))
        per_modality = gain * (1.0 + 0.08 * rng.standard_normal(len(MODALITIES)))
        out.append(
            HospitalProfile(
                hospital=hospital,
                gain=tuple(round(float(g), 3) for g in per_modality),  # type: ignore[arg-type]
                bias_strength=round(_BIAS[k] * float(rng.uniform(0.85, 1.15)), 4),
                noise=round(_NOISE[k] * float(rng.uniform(0.85, 1.15)), 4),
                spacing_mm=tuple(round(spacing_mm * f, 4) for f in _SPACING[k]),  # type: ignore[arg-type]
                orientation=_ORIENTATION[k],
                large_tumour_share=_LARGE_SHARE[k],
            )
        )
    return out


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray, sigma_mm: float
) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma_mm``."""
    field = gaussian_filter(rng.standard_normal(shape), sigma=sigma_mm / spacing, mode="wrap")
    return field / (field.std() + 1e-8)


def _ellipsoid_radius(
    coords: Sequence[np.ndarray], centre: Sequence[float], axes: Sequence[float]
) -> np.ndarray:
    return np.sqrt(sum(((c - m) / a) ** 2 for c, m, a in zip(coords, centre, axes, strict=True)))


def synth_case(
    case_id: str,
    profile: HospitalProfile,
    *,
    fov_mm: float,
    rng: np.random.Generator,
    intensity: dict[str, tuple[float, ...]] | None = None,
    tumour_types: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> SyntheticCase:
    """Draw one case on the hospital's grid (field of view ``fov_mm`` per side).

    ``intensity`` is the acquisition protocol's tissue contrast per modality (default: the
    consortium's, :data:`_INTENSITY`); ``tumour_types`` the shares of rim-enhancing, solid and
    non-enhancing tumours in the population.
    """
    intensity = intensity or _INTENSITY
    spacing = np.asarray(profile.spacing_mm, dtype=np.float64)
    shape = tuple(max(8, int(round(fov_mm / s))) for s in spacing)
    # voxel centres in mm, centred on the head; then in units of the half field of view
    axes = [(np.arange(n) + 0.5 - n / 2) * s for n, s in zip(shape, spacing, strict=True)]
    mm = np.meshgrid(*axes, indexing="ij")
    u = [m / (fov_mm / 2) for m in mm]

    # -- anatomy ------------------------------------------------------------------------------
    head_axes = np.array([0.74, 0.88, 0.78]) * rng.uniform(0.95, 1.03, 3)
    r = _ellipsoid_radius(u, (0.0, 0.0, 0.0), head_axes)
    tissue = np.zeros(shape, dtype=np.int8)
    tissue[r < 1.0] = _T["scalp"]
    tissue[r < 0.93] = _T["skull"]
    tissue[r < 0.85] = _T["csf"]
    brain = r < 0.82
    depth = r / 0.82  # 0 at the centre, 1 at the brain surface
    gyri = _smooth_field(rng, shape, spacing, 6.0)
    tissue[brain] = _T["white_matter"]
    tissue[brain & (depth > 0.78 + 0.06 * gyri)] = _T["grey_matter"]
    scale = head_axes / np.array([0.74, 0.88, 0.78])
    for side in (-1.0, 1.0):
        vent = _ellipsoid_radius(
            u,
            (side * 0.09 * scale[0], 0.04 * scale[1], 0.06 * scale[2]),
            np.array([0.06, 0.22, 0.10]) * scale * rng.uniform(0.8, 1.25),
        )
        tissue[brain & (vent < 1.0)] = _T["ventricle"]

    # -- tumour -------------------------------------------------------------------------------
    large = rng.random() < profile.large_tumour_share
    r_wt = (rng.uniform(24.0, 36.0) if large else rng.uniform(12.0, 20.0)) / (fov_mm / 2)
    while True:  # a centre deep enough in the brain, off the midline
        centre = rng.uniform(-0.45, 0.45, 3) * head_axes
        if np.sqrt(np.sum((centre / head_axes) ** 2)) < 0.55 and abs(centre[0]) > 0.08:
            break
    tumour_type = str(rng.choice(["rim", "solid", "nonenhancing"], p=list(tumour_types)))
    blob = _smooth_field(rng, shape, spacing, 10.0)
    wt = brain & (_ellipsoid_radius(u, centre, [r_wt] * 3) < 1.0 + 0.25 * blob)
    r_tc = r_wt * rng.uniform(0.45, 0.65)
    core_centre = centre + rng.normal(0.0, 0.15 * r_tc, 3)
    tc = wt & (_ellipsoid_radius(u, core_centre, [r_tc] * 3) < 1.0 + 0.2 * blob)
    if tumour_type == "rim":
        r_n = r_tc * rng.uniform(0.4, 0.7)
        necrotic = tc & (_ellipsoid_radius(u, core_centre, [r_n] * 3) < 1.0 + 0.2 * blob)
        enhancing = tc & ~necrotic
    elif tumour_type == "solid":
        necrotic, enhancing = np.zeros_like(tc), tc
    else:
        necrotic, enhancing = tc, np.zeros_like(tc)
    label = np.zeros(shape, dtype=np.uint8)
    label[wt] = 2
    label[necrotic] = 1
    label[enhancing] = 3
    tissue[wt] = _T["oedema"]
    tissue[necrotic] = _T["necrosis"]
    tissue[enhancing] = _T["enhancing"]

    # -- acquisition --------------------------------------------------------------------------
    texture = _smooth_field(rng, shape, spacing, 3.0)
    coeffs = rng.normal(0.0, 1.0, 6)
    bias = np.exp(
        profile.bias_strength
        * (
            coeffs[0] * u[0]
            + coeffs[1] * u[1]
            + coeffs[2] * u[2]
            + 0.5 * coeffs[3] * u[0] * u[1]
            + 0.5 * coeffs[4] * u[1] * u[2]
            + 0.5 * coeffs[5] * (u[2] ** 2 - 0.3)
        )
        / np.sqrt(3.0)
    )
    images = {}
    for m, gain in zip(MODALITIES, profile.gain, strict=True):
        level = np.asarray(intensity[m], dtype=np.float64) * rng.uniform(0.95, 1.05, len(_TISSUES))
        clean = level[tissue] * (1.0 + 0.04 * texture)
        clean = gaussian_filter(clean, sigma=0.5)  # partial volume at tissue borders
        sd = profile.noise
        real = clean * bias + rng.normal(0.0, sd, shape)
        imag = rng.normal(0.0, sd, shape)
        magnitude = np.sqrt(real**2 + imag**2) * gain  # Rician, as magnitude images are
        images[m] = np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
    return SyntheticCase(
        case_id=case_id,
        images=images,
        label=label,
        spacing_mm=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        orientation=profile.orientation,
        tumour_type=tumour_type,
    )


def _affine(shape: Sequence[int], spacing: Sequence[float], orientation: str) -> np.ndarray:
    """Voxel-to-world (RAS mm) matrix for RAS voxel order, or LPS (first two axes reversed)."""
    sign = np.array([1.0, 1.0, 1.0]) if orientation == "RAS" else np.array([-1.0, -1.0, 1.0])
    diag = sign * np.asarray(spacing)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(diag)
    affine[:3, 3] = -diag * (np.asarray(shape) / 2 - 0.5)
    return affine


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """A NIfTI-1 file whose bytes depend only on ``array`` and ``affine`` (gzip mtime 0)."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    Path(path).write_bytes(data)


def write_case(case: SyntheticCase, out_dir: Path) -> Path:
    """Write the case's four modalities and label as ``out_dir/<case_id>/<case_id>_<kind>``."""
    case_dir = Path(out_dir) / case.case_id
    case_dir.mkdir(parents=True, exist_ok=True)

    def stored(a: np.ndarray) -> np.ndarray:
        return a if case.orientation == "RAS" else a[::-1, ::-1, :].copy()

    affine = _affine(case.label.shape, case.spacing_mm, case.orientation)
    for m in MODALITIES:
        write_nifti(stored(case.images[m]), affine, case_file(case_dir, m))
    write_nifti(stored(case.label), affine, case_file(case_dir, LABEL))
    return case_dir


def generate_hospitals(
    hospitals: Sequence[str],
    out_dir: Path,
    *,
    seed: int,
    cases_per_hospital: int,
    volume_size: int,
    spacing_mm: float,
) -> dict[str, Any]:
    """Write ``out_dir/<hospital>/<case_id>/`` for every hospital; return counts and profiles.

    Each case draws from its own stream (seed, hospital index, case index), so a case does not
    change when another hospital or more cases are added.
    """
    fov = volume_size * spacing_mm
    profiles = hospital_profiles(hospitals, seed=seed, spacing_mm=spacing_mm)
    counts: dict[str, dict[str, Any]] = {}
    for h, profile in enumerate(profiles):
        types: dict[str, int] = {}
        voxels_ml = []
        for c in range(cases_per_hospital):
            case = synth_case(
                f"{profile.hospital}-{c:04d}",
                profile,
                fov_mm=fov,
                rng=np.random.default_rng([seed, h, c]),
            )
            write_case(case, Path(out_dir) / profile.hospital)
            types[case.tumour_type] = types.get(case.tumour_type, 0) + 1
            voxels_ml.append(float((case.label > 0).sum() * np.prod(case.spacing_mm) / 1000.0))
        counts[profile.hospital] = {
            "cases": cases_per_hospital,
            "tumour_types": dict(sorted(types.items())),
            "mean_whole_tumour_ml": round(float(np.mean(voxels_ml)), 2),
        }
    return {
        "counts": {
            "cases": {h: v["cases"] for h, v in counts.items()},
            "mean_whole_tumour_ml": {h: v["mean_whole_tumour_ml"] for h, v in counts.items()},
            "tumour_types": {h: v["tumour_types"] for h, v in counts.items()},
        },
        "hospital_profiles": [asdict(p) for p in profiles],
        "field_of_view_mm": fov,
    }


#: The public archive's own seed: never ``base.seed``, so no consortium setting reaches it.
PUBLIC_SEED = 20_251_107
#: The archive's acquisition protocol (older 1.5 T sequences, another contrast agent timing):
#: the same tissues with other contrast. Enhancement on T1c is weaker, oedema on FLAIR and T2
#: less conspicuous, grey/white contrast flatter, so a model trained there alone misreads the
#: consortium's scans at tumour borders.
_PUBLIC_INTENSITY = {
    #        air  scalp skull csf   gm    wm    vent  oed   necr  enh
    "t1": (0.0, 0.85, 0.10, 0.20, 0.60, 0.72, 0.20, 0.50, 0.30, 0.55),
    "t1ce": (0.0, 0.85, 0.10, 0.22, 0.62, 0.74, 0.22, 0.52, 0.28, 0.85),
    "t2": (0.0, 0.60, 0.08, 0.95, 0.66, 0.50, 0.95, 0.75, 0.88, 0.64),
    "flair": (0.0, 0.62, 0.08, 0.20, 0.64, 0.52, 0.18, 0.80, 0.40, 0.70),
}
#: A referral archive of high-grade gliomas: mostly large, rim-enhancing tumours.
_PUBLIC_LARGE_SHARE = 0.7
_PUBLIC_TUMOUR_TYPES = (0.85, 0.1, 0.05)


def _public_profile(rng: np.random.Generator, spacing_mm: float) -> HospitalProfile:
    """One contributing site of the archive: its own scanner, drawn per case (many sites)."""
    gain = float(rng.lognormal(np.log(1500.0), 0.6))
    return HospitalProfile(
        hospital="public",
        gain=tuple(gain * (1.0 + 0.1 * rng.standard_normal(len(MODALITIES)))),  # type: ignore[arg-type]
        bias_strength=float(rng.uniform(0.05, 0.45)),
        noise=float(rng.uniform(0.03, 0.08)),
        # thick slices: archives of older clinical protocols store 1.5x thicker axial slices
        spacing_mm=(spacing_mm, spacing_mm, 1.5 * spacing_mm),
        orientation=str(rng.choice(["RAS", "LPS"])),
        large_tumour_share=_PUBLIC_LARGE_SHARE,
    )


def public_cases(n: int, *, fov_mm: float, spacing_mm: float) -> Iterator[SyntheticCase]:
    """A public archive of ``n`` cases: other population, other devices, its own seed.

    It differs from the consortium the way a public archive does: many contributing sites
    with their own scanners (gain, bias, noise drawn per case), thick-slice storage, another
    contrast protocol (:data:`_PUBLIC_INTENSITY`) and a high-grade referral population
    (:data:`_PUBLIC_LARGE_SHARE`, :data:`_PUBLIC_TUMOUR_TYPES`). ``fov_mm`` and
    ``spacing_mm`` come from the model's input grid, never from a hospital's generator.
    """
    for c in range(n):
        rng = np.random.default_rng([PUBLIC_SEED, c])
        yield synth_case(
            f"public-{c:05d}",
            _public_profile(rng, spacing_mm),
            fov_mm=fov_mm,
            rng=rng,
            intensity=_PUBLIC_INTENSITY,
            tumour_types=_PUBLIC_TUMOUR_TYPES,
        )
