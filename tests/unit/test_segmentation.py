"""Task ``segmentation``: generator, validation, metrics, model and a few training steps (tiny)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from privfed.config import PrivFedConfig, config_from_dict
from privfed.stages import validate_data
from privfed.stages.validate_data import ValidationFailed
from privfed.tasks import get_task
from privfed.tasks.segmentation.figures import tumour_slice
from privfed.tasks.segmentation.generate import generate_hospitals, hospital_profiles
from privfed.tasks.segmentation.layout import MODALITIES, case_file
from privfed.tasks.segmentation.metrics import region_scores
from privfed.tasks.segmentation.settings import SegmentationModelSection
from privfed.tasks.segmentation.task import SegmentationTask
from privfed.training import DPSettings, train_local_pass
from tests.conftest import raw_params

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def seg_cfg() -> PrivFedConfig:
    return config_from_dict(raw_params(base={"task": "segmentation", "profile": "tiny"}))


@pytest.fixture(scope="module")
def seg_raw(seg_cfg: PrivFedConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile's synthetic cases, generated and ingested (shared, read-only)."""
    task = get_task("segmentation", seg_cfg)
    base = tmp_path_factory.mktemp("seg")
    manifest = task.generate(base / "generated")
    task.ingest(base / "generated", base / "raw", site_column=manifest["site_column"])
    (base / "raw" / "manifest.json").write_text(json.dumps({"hospitals": HOSPITALS}))
    return base / "raw"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}


def _load(case_dir: Path, kind: str) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(case_file(case_dir, kind))).dataobj)


# -- generator ----------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_data(tmp_path) -> None:
    # Prepare
    kwargs = {"cases_per_hospital": 2, "volume_size": 24, "spacing_mm": 8.0}
    # Execute
    generate_hospitals(HOSPITALS[:2], tmp_path / "a", seed=3, **kwargs)
    generate_hospitals(HOSPITALS[:2], tmp_path / "b", seed=3, **kwargs)
    generate_hospitals(HOSPITALS[:2], tmp_path / "c", seed=4, **kwargs)
    # Assert
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert len(a) == 2 * 2 * 5  # hospitals x cases x (4 modalities + label)
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_layout_labels_and_modality_contrasts(seg_raw) -> None:
    case = seg_raw / "hospital_1" / "hospital_1-0000"
    assert sorted(p.name for p in case.iterdir()) == sorted(
        f"{case.name}_{k}.nii.gz" for k in ("flair", "seg", "t1", "t1ce", "t2")
    )
    seg = _load(case, "seg")
    assert set(np.unique(seg)) <= {0, 1, 2, 3} and (seg == 2).any()
    img = {m: _load(case, m).astype(float) for m in MODALITIES}
    # oedema is bright on T2 and FLAIR (vs. the brain around it), the enhancing rim on T1c
    ring = (seg == 0) & (img["t1"] > 0.3 * np.percentile(img["t1"], 99))
    for m in ("t2", "flair"):
        assert img[m][seg == 2].mean() > 1.2 * img[m][ring].mean(), m
    if (seg == 3).any():
        assert img["t1ce"][seg == 3].mean() > 1.3 * img["t1"][seg == 3].mean()
        assert img["t1ce"][seg == 3].mean() > img["t1ce"][seg == 2].mean()


def test_hospitals_differ_as_their_profiles_say(tmp_path) -> None:
    # Prepare
    profiles = {p.hospital: p for p in hospital_profiles(HOSPITALS, seed=5, spacing_mm=8.0)}
    # Execute
    generate_hospitals(
        HOSPITALS, tmp_path, seed=5, cases_per_hospital=10, volume_size=24, spacing_mm=8.0
    )
    # Assert
    brightness, tumour_ml, noise = {}, {}, {}
    for h in HOSPITALS:
        cases = sorted((tmp_path / h).iterdir())
        header = nib.load(case_file(cases[0], "t1"))
        assert np.allclose(header.header.get_zooms(), profiles[h].spacing_mm)
        assert nib.aff2axcodes(header.affine) == tuple(profiles[h].orientation)
        t1 = [np.asarray(nib.load(case_file(c, "t1")).dataobj, dtype=float) for c in cases]
        brightness[h] = np.median([np.percentile(a, 99) for a in t1])
        noise[h] = np.median([a[:2, :2, :].std() for a in t1]) / profiles[h].gain[0]
        voxel_ml = np.prod(profiles[h].spacing_mm) / 1000
        tumour_ml[h] = np.mean(
            [
                (np.asarray(nib.load(case_file(c, "seg")).dataobj) > 0).sum() * voxel_ml
                for c in cases
            ]
        )
    # scanner gain: intensities rank like the configured gains
    by_gain = sorted(HOSPITALS, key=lambda h: profiles[h].gain[0])
    assert sorted(HOSPITALS, key=brightness.get) == by_gain
    # resolution: a coarser scanner stores fewer voxels of the same field of view
    assert nib.load(case_file(sorted((tmp_path / "hospital_2").iterdir())[0], "t1")).shape == (
        24,
        24,
        16,
    )
    # tumour-size mix: the referral centre (80 % large) sees larger tumours than hospital_1 (20 %)
    assert profiles["hospital_2"].large_tumour_share > profiles["hospital_1"].large_tumour_share
    assert tumour_ml["hospital_2"] > 1.5 * tumour_ml["hospital_1"]
    # noise: air-corner sd relative to gain follows the configured noise level
    assert sorted(HOSPITALS, key=noise.get) == sorted(HOSPITALS, key=lambda h: profiles[h].noise)


# -- validation ---------------------------------------------------------------------------------
def test_clean_cases_pass_and_broken_cases_are_named(seg_cfg, seg_raw, tmp_path) -> None:
    # Prepare: clean data first, then one case per fault
    report = validate_data.run(seg_cfg, {"raw": seg_raw}, {"report": tmp_path / "ok"})
    assert report["success"] is True
    raw = tmp_path / "raw"
    shutil.copytree(seg_raw, raw)
    missing = raw / "hospital_1" / "hospital_1-0002"
    case_file(missing, "t1ce").unlink()
    shifted = raw / "hospital_2" / "hospital_2-0003"
    img = nib.load(case_file(shifted, "flair"))
    moved = img.affine.copy()
    moved[0, 3] += 12.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), case_file(shifted, "flair"))
    relabelled = raw / "hospital_3" / "hospital_3-0001"
    seg = nib.load(case_file(relabelled, "seg"))
    data = np.asarray(seg.dataobj).copy()
    data[data == 3] = 4
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = 4
    nib.save(nib.Nifti1Image(data, seg.affine), case_file(relabelled, "seg"))
    # Execute
    with pytest.raises(ValidationFailed) as err:
        validate_data.run(seg_cfg, {"raw": raw}, {"report": tmp_path / "bad"})
    # Assert
    message = str(err.value)
    assert "hospital_1-0002: missing hospital_1-0002_t1ce.nii.gz" in message
    assert "hospital_2-0003: flair affine differs from seg's by up to 12 mm" in message
    assert "hospital_3-0001: label values [4] outside [0, 1, 2, 3]" in message
    for column in ("problem_files", "problem_geometry", "problem_label"):
        assert f"expect_column_values_to_be_null on {column}" in message
    assert "hospital_1-0000" not in message  # clean cases stay out of it


# -- metrics ------------------------------------------------------------------------------------
def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Target: 8 oedema, 4 necrotic, 4 enhancing voxels. Prediction: ET right, the necrotic
    core called oedema, and 4 extra oedema voxels."""
    target = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    target[0, 0, 0:2, 0:2, 0:2] = 2  # 8 oedema
    target[0, 0, 2, 0:2, 0:2] = 1  # 4 necrotic
    target[0, 0, 3, 0:2, 0:2] = 3  # 4 enhancing
    pred = target.clone()
    pred[pred == 1] = 2
    pred[0, 0, 4, 0:2, 0:2] = 2  # 4 false-positive oedema
    return pred, target


def test_region_dice_on_a_hand_built_case() -> None:
    # Prepare
    pred, target = _hand_case()
    # Execute
    scores = region_scores(pred, target, spacing_mm=1.0)
    # Assert: WT 2*16/(20+16); TC 2*4/(4+8); ET 2*4/(4+4); ET matches exactly, so HD95 0
    assert scores["dice_wt"][0] == pytest.approx(32 / 36)
    assert scores["dice_tc"][0] == pytest.approx(8 / 12)
    assert scores["dice_et"][0] == pytest.approx(1.0)
    assert scores["hd95_et"][0] == pytest.approx(0.0)
    # BraTS convention for empty regions: both empty -> Dice 1, HD 0; only one -> Dice 0
    empty = torch.zeros_like(target)
    both_empty = region_scores(empty, empty)
    assert both_empty["dice_et"][0] == 1.0 and both_empty["hd95_et"][0] == 0.0
    assert region_scores(pred, empty)["dice_wt"][0] == 0.0


class _Fixed(torch.nn.Module):
    """Predicts the hand-built segmentation whatever the input (logits 10 on the class)."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        onehot = torch.nn.functional.one_hot(pred[:, 0], 4).permute(0, 4, 1, 2, 3).float()
        self.logits = torch.nn.Parameter(10.0 * onehot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1, -1, -1, -1)


class _HandDataset(torch.utils.data.Dataset):
    settings = SegmentationModelSection(channels=(8, 16), grid=8, roi_size=8, spacing_mm=1.0)

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(4, 8, 8, 8), self.target[0]


def test_evaluate_reports_region_dice_through_sliding_window() -> None:
    pred, target = _hand_case()
    metrics = SegmentationTask(config_from_dict({"base": {"task": "segmentation"}})).evaluate(
        _Fixed(pred), _HandDataset(target)
    )
    assert metrics["dice_mean"] == pytest.approx((32 / 36 + 8 / 12 + 1.0) / 3)
    assert metrics["n"] == 1 and np.isfinite(metrics["loss"]) and metrics["hd95_et"] == 0.0


# -- model and training -------------------------------------------------------------------------
def test_model_is_opacus_compatible_with_per_sample_gradients(seg_cfg) -> None:
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    # Prepare
    task = get_task("segmentation", seg_cfg)
    torch.manual_seed(0)
    model = task.build_model()
    assert ModuleValidator.validate(model, strict=False) == []
    x = torch.randn(2, 4, 16, 16, 16)
    y = torch.randint(0, 4, (2, 1, 16, 16, 16))
    # Execute
    wrapped = GradSampleModule(model)
    task.loss(wrapped, [x, y]).backward()
    per_sample = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    wrapped._close()
    model.zero_grad()
    task.loss(model, [x[:1], y[:1]]).backward()
    # Assert: every parameter has one gradient per case; case 0's equals its own gradient
    for name, p in model.named_parameters():
        assert per_sample[name].shape == (2, *p.shape), name
        assert torch.allclose(per_sample[name][0], p.grad, atol=1e-5, rtol=1e-3), name


def test_a_few_epochs_lower_the_loss_and_dp_sgd_runs(seg_cfg, seg_raw, tmp_path) -> None:
    # Prepare
    task = get_task("segmentation", seg_cfg)
    train_dir = tmp_path / "hospital_1" / "train"
    cases = sorted(p.name for p in (seg_raw / "hospital_1").iterdir())
    task.write_subset(seg_raw, cases, train_dir)
    train = task.load_dataset([train_dir])
    shutil.copytree(train_dir, tmp_path / "hospital_1" / "val")
    plain = task.load_dataset([tmp_path / "hospital_1" / "val"])
    image, label = train[0]
    assert image.shape == (4, 24, 24, 24) and label.shape == (1, 24, 24, 24)
    assert label.dtype == torch.int64 and set(label.unique().tolist()) <= {0, 1, 2, 3}
    torch.manual_seed(0)
    model = task.build_model()
    before = task.evaluate(model, plain)["loss"]
    # Execute
    result = train_local_pass(task, model, train, epochs=4, batch_size=2, lr=3e-3, seed=0)
    after = task.evaluate(model, plain)
    dp = train_local_pass(
        task,
        model,
        train,
        epochs=1,
        batch_size=2,
        lr=1e-3,
        dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0),
    )
    # Assert
    assert result.num_examples == len(cases)
    assert after["loss"] < 0.8 * before
    assert {"dice_tc", "dice_wt", "dice_et", "dice_mean", "hd95_mean"} <= set(after)
    assert dp.history and dp.history[0][0] == 1.0  # (noise multiplier, sample rate, steps)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_report_figures_write_one_png_per_case_through_the_tumour(
    seg_cfg, seg_raw, tmp_path
) -> None:
    # Prepare: three test cases, an untrained model
    task = get_task("segmentation", seg_cfg)
    test_dir = tmp_path / "hospital_1" / "test"
    cases = sorted(p.name for p in (seg_raw / "hospital_1").iterdir())[:3]
    task.write_subset(seg_raw, cases, test_dir)
    dataset = task.load_dataset([test_dir])
    torch.manual_seed(0)
    model = task.build_model()
    # Execute
    written = task.report_figures(model, dataset, tmp_path / "figures", label="federated")
    # Assert: two cases, PNG files named after them; the slice has the most tumour voxels
    assert [p.name for p in written] == [f"{c}.png" for c in cases[:2]]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    label = np.zeros((4, 4, 5), dtype=np.int64)
    label[1:3, 1:3, 3] = 2
    label[0, 0, 1] = 1
    assert tumour_slice(label) == 3
    assert tumour_slice(np.zeros((4, 4, 6))) == 3


def test_example_losses_score_whole_cases_without_augmentation(seg_cfg, seg_raw, tmp_path) -> None:
    # Prepare: the same cases as a training split (random crops) and as a test split
    task = get_task("segmentation", seg_cfg)
    cases = sorted(p.name for p in (seg_raw / "hospital_2").iterdir())[:2]
    task.write_subset(seg_raw, cases, tmp_path / "train")
    task.write_subset(seg_raw, cases, tmp_path / "test")
    torch.manual_seed(0)
    model = task.build_model()
    # Execute
    as_members = task.example_losses(model, task.load_dataset([tmp_path / "train"]))
    as_test = task.example_losses(model, task.load_dataset([tmp_path / "test"]))
    # Assert: one finite loss per case, identical however the split was loaded
    assert as_members.shape == (2,) and np.isfinite(as_members).all()
    np.testing.assert_allclose(as_members, as_test, rtol=1e-6)
    assert task.train_batch_size() == seg_cfg.model.segmentation.batch_size


def test_an_empty_poisson_batch_is_a_zero_gradient_step(seg_cfg) -> None:
    # Prepare: what Opacus' Poisson loader yields when it samples no case
    from opacus import GradSampleModule

    task = get_task("segmentation", seg_cfg)
    torch.manual_seed(0)
    model = GradSampleModule(task.build_model())
    grid = seg_cfg.model.segmentation.roi_size
    batch = [torch.zeros(0, 4, grid, grid, grid), torch.zeros(0, 1, grid, grid, grid).long()]
    # Execute
    loss = task.loss(model, batch)
    loss.backward()
    # Assert
    assert loss.item() == 0.0
    assert all(p.grad_sample is not None and not p.grad_sample.any() for p in model.parameters())


def test_baselines_train_for_their_own_epochs_not_the_shared_default() -> None:
    """Centralized and local-only U-Nets take ``model.segmentation.baseline_epochs`` (the
    federated budget by default); tabular tasks keep the stage's own ``epochs``."""
    raw = raw_params(base={"task": "segmentation", "profile": "default"})
    cfg = config_from_dict(raw)
    assert get_task("segmentation", cfg).baseline_epochs(10) == 16
    f = cfg.train_federated
    assert cfg.model.segmentation.baseline_epochs == f.rounds * f.local_epochs
    assert get_task("readmission", cfg).baseline_epochs(10) == 10


# -- public knowledge ---------------------------------------------------------------------------
def test_public_archive_differs_from_the_hospitals_as_a_public_archive_does() -> None:
    """Own seed, thick slices, many scanners, weaker enhancement, larger tumours."""
    from privfed.tasks.segmentation.generate import hospital_profiles, public_cases, synth_case

    # Prepare: the archive, and the same number of cases of hospital_1 on the same field of view
    public = list(public_cases(12, fov_mm=192.0, spacing_mm=8.0))
    again = list(public_cases(12, fov_mm=192.0, spacing_mm=8.0))
    profile = hospital_profiles(["hospital_1"], seed=42, spacing_mm=8.0)[0]
    hospital = [
        synth_case(f"h-{c}", profile, fov_mm=192.0, rng=np.random.default_rng([42, 0, c]))
        for c in range(12)
    ]

    def enhancement(cases) -> float:  # enhancing tumour over white-matter-like tissue on T1c
        ratios = [
            c.images["t1ce"][c.label == 3].mean() / np.percentile(c.images["t1ce"], 90)
            for c in cases
            if (c.label == 3).any()
        ]
        return float(np.mean(ratios))

    def tumour_ml(cases) -> float:
        return float(np.mean([(c.label > 0).sum() * np.prod(c.spacing_mm) / 1e3 for c in cases]))

    # Assert: deterministic without any consortium seed, and unlike the hospital
    assert all(
        np.array_equal(a.images["t1"], b.images["t1"]) for a, b in zip(public, again, strict=True)
    )
    assert all(c.case_id.startswith("public-") for c in public)
    assert all(c.spacing_mm[2] == 1.5 * c.spacing_mm[0] for c in public)  # thick slices
    assert enhancement(public) < 0.9 * enhancement(hospital)
    assert tumour_ml(public) > 1.3 * tumour_ml(hospital)


def test_public_model_is_built_once_reads_no_hospital_setting_and_starts_every_run(
    seg_cfg,
) -> None:
    from privfed.tasks.base import PUBLIC_ONLY
    from privfed.tasks.segmentation.public import public_model

    # Prepare: another consortium (seed, size, scanners' grid) with the same model settings
    task = get_task("segmentation", seg_cfg)
    other = get_task(
        "segmentation",
        config_from_dict(
            raw_params(
                base={"task": "segmentation", "profile": "tiny", "seed": 7, "num_hospitals": 5},
                generate_data={"segmentation": {"cases_per_hospital": 5, "volume_size": 32}},
            )
        ),
    )
    # Execute
    built = public_model(task)
    # Assert: one build, its scans removed, every run starts from it, reported as public_only
    assert public_model(other).folder == built.folder
    assert sorted(p.name for p in built.folder.iterdir()) == ["meta.json", "public.pt"]
    assert 1 <= built.meta["best_epoch"] <= seg_cfg.model.segmentation.public_epochs
    for name, value in task.initial_model().state_dict().items():
        assert torch.equal(value, built.state[name]), name
    assert list(task.reference_models()) == [PUBLIC_ONLY]
