"""Task ``retina``: generator, preprocessing, validation, the GAN's fit under DP, the metrics."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from privfed.config import ConfigError, PrivFedConfig, config_from_dict
from privfed.io import DataError
from privfed.stages import validate_data
from privfed.stages.validate_data import ValidationFailed
from privfed.tasks import get_task
from privfed.tasks.retina.generate import generate_hospitals
from privfed.tasks.retina.metrics import (
    fid,
    kid,
    nearest_distances,
    precision_recall,
    score_generator,
)
from privfed.tasks.retina.public import LEVELS, public_slices
from privfed.tasks.retina.transforms import clahe, preprocess
from privfed.training import DPSettings, FitPlan
from tests.conftest import raw_params

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def cfg() -> PrivFedConfig:
    return config_from_dict(raw_params(base={"task": "retina", "profile": "tiny"}))


def _retina_cfg(**retina: float) -> PrivFedConfig:
    """The tiny retina config with ``model.retina`` keys changed."""
    raw = raw_params(base={"task": "retina", "profile": "tiny"})
    raw["profiles"]["tiny"]["model"]["retina"].update(retina)  # the profile's keys win
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def raw(cfg: PrivFedConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile's synthetic images, generated and ingested (shared, read-only)."""
    task = get_task("retina", cfg)
    base = tmp_path_factory.mktemp("retina")
    manifest = task.generate(base / "generated")
    task.ingest(base / "generated", base / "raw", site_column=manifest["site_column"])
    (base / "raw" / "manifest.json").write_text(json.dumps({"hospitals": HOSPITALS}))
    return base / "raw"


@pytest.fixture(scope="module")
def parts(cfg: PrivFedConfig, raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<hospital>/{train,test}`` folders: every fourth image of a hospital is a test image."""
    task = get_task("retina", cfg)
    root = tmp_path_factory.mktemp("parts")
    units = task.units(raw)
    for hospital, group in units.groupby("hospital"):
        ids = group["unit_id"].tolist()
        task.write_subset(raw, [u for i, u in enumerate(ids) if i % 4], root / hospital / "train")
        task.write_subset(raw, ids[::4], root / hospital / "test")
    return root


# -- generator ----------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_images(tmp_path) -> None:
    # Execute
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_hospitals(
            HOSPITALS[:2], tmp_path / name, seed=seed, images_per_hospital=3, image_size=32
        )

    # Assert
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.*"))}

    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")


def test_layout_cameras_and_case_mix_differ_by_hospital(cfg, raw) -> None:
    # Assert: one labels CSV per hospital naming its PNGs, grades 0-4
    sizes, grades = {}, {}
    for hospital in HOSPITALS:
        labels = pd.read_csv(raw / hospital / "labels.csv")
        assert list(labels.columns) == ["image", "grade"]
        assert len(labels) == cfg.generate_data.retina.images_per_hospital
        assert labels["grade"].between(0, 4).all()
        grades[hospital] = np.bincount(labels["grade"], minlength=5)
        with Image.open(raw / hospital / labels["image"][0]) as img:
            sizes[hospital] = img.size
    # cameras store 1x, 1.5x, 2x the base size; case mixes differ
    assert sizes == {"hospital_1": (32, 32), "hospital_2": (48, 48), "hospital_3": (64, 64)}
    assert len({tuple(g) for g in grades.values()}) == 3


def test_preprocessing_bins_to_the_grid_and_rescales_to_minus_one_one() -> None:
    # Prepare: a 64 x 64 ramp whose 2 x 2 blocks are constant, in [0.4, 0.6]
    ramp = np.repeat(np.repeat(np.linspace(0.4, 0.6, 32)[None, :].repeat(32, 0), 2, 0), 2, 1)
    # Execute
    binned = preprocess(ramp, size=32, use_clahe=False)
    enhanced = preprocess(ramp, size=32, use_clahe=True, clahe_tiles=1, clahe_clip=1.0)
    # Assert: binning a 2x2-constant image is exact; rescaling maps v to 2v - 1
    assert binned.shape == (32, 32) and binned.dtype == np.float32
    np.testing.assert_allclose(binned, 2 * ramp[::2, ::2] - 1, atol=1e-6)
    # one tile and no clipping is plain histogram equalization: the 32 equally common ramp
    # values map to their cumulative shares 1/32 ... 32/32 (as scikit-image maps them)
    np.testing.assert_allclose(np.unique(enhanced), 2 * np.arange(1, 33) / 32 - 1, atol=1e-6)


def test_clahe_clip_limit_bounds_the_contrast_gain() -> None:
    # Prepare: a low-contrast image (values in [0.45, 0.55])
    rng = np.random.default_rng(0)
    image = 0.45 + 0.1 * rng.random((32, 32))
    # Execute
    mild = clahe(image, tiles=2, clip=0.005)
    strong = clahe(image, tiles=2, clip=1.0)
    # Assert: both in [0, 1], and a lower clip limit stretches less
    for out in (mild, strong):
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert mild.std() < strong.std()


# -- validation ---------------------------------------------------------------------------------
def test_clean_images_pass_and_broken_files_are_named(cfg, raw, tmp_path) -> None:
    # Prepare: clean data first, then one image per fault
    report = validate_data.run(cfg, {"raw": raw}, {"report": tmp_path / "ok"})
    assert report["success"] is True
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    h1 = bad / "hospital_1"
    Image.new("RGB", (20, 20), (90, 40, 10)).save(h1 / "hospital_1_00001.png")  # too small
    Image.new("RGB", (32, 32), (90, 40, 10)).save(h1 / "hospital_1_00002.png")  # constant
    (h1 / "hospital_1_00003.png").write_bytes(b"not a png")  # unreadable
    labels = pd.read_csv(h1 / "labels.csv")
    labels.loc[4, "grade"] = 7
    labels.to_csv(h1 / "labels.csv", index=False)
    # Execute
    with pytest.raises(ValidationFailed) as err:
        validate_data.run(cfg, {"raw": bad}, {"report": tmp_path / "bad"})
    # Assert
    message = str(err.value)
    assert "hospital_1_00001.png: 20x20 pixels; need a square image of at least 32x32" in message
    assert "hospital_1_00002.png: constant image" in message
    assert "hospital_1_00003.png: unreadable" in message
    assert "hospital_1_00004.png: grade 7 is not an integer in 0-4" in message
    assert "hospital_1_00000.png" not in message  # clean images stay out of it


def test_own_images_ingest_from_one_folder_per_hospital(cfg, tmp_path) -> None:
    # Prepare: two hospitals of JPEGs with their labels; then a single hospital
    task = get_task("retina", cfg)
    for hospital in ("site_a", "site_b"):
        folder = tmp_path / "own" / hospital
        folder.mkdir(parents=True)
        rng = np.random.default_rng(len(hospital))
        for i in range(3):
            pixels = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"eye{i}.jpg")
        pd.DataFrame({"image": [f"eye{i}.jpg" for i in range(3)], "grade": [0, 2, 4]}).to_csv(
            folder / "labels.csv", index=False
        )
    # Execute
    manifest = task.ingest(tmp_path / "own", tmp_path / "raw", site_column="site")
    units = task.units(tmp_path / "raw")
    task.write_subset(tmp_path / "raw", ["site_a/eye1.jpg", "site_b/eye1.jpg"], tmp_path / "split")
    dataset = task.load_dataset([tmp_path / "split"])
    # Assert: the same file name at two hospitals stays two images
    assert manifest["hospitals"] == ["site_a", "site_b"]
    assert set(units["unit_id"]) >= {"site_a/eye0.jpg", "site_b/eye2.jpg"}
    assert sorted(p.name for p in (tmp_path / "split").glob("*.jpg")) == [
        "eye1.jpg",
        "site_b__eye1.jpg",
    ]
    assert dataset.images.shape == (2, 1, 32, 32) and dataset.labels.tolist() == [2, 2]
    shutil.rmtree(tmp_path / "own" / "site_b")
    with pytest.raises(DataError, match="a federation needs at least 2"):
        task.ingest(tmp_path / "own", tmp_path / "raw2", site_column="site")


# -- model and training -------------------------------------------------------------------------
def test_discriminator_has_per_sample_gradients_under_opacus(cfg) -> None:
    from opacus import GradSampleModule

    # Prepare
    model = get_task("retina", cfg).build_model()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    d = GradSampleModule(model.discriminator)
    image, grade = torch.randn(3, 1, 32, 32), torch.tensor([0, 2, 4])
    # Execute
    logit, grade_logits = d(image, grade, grades=True)
    (logit.sum() + grade_logits.sum()).backward()
    # Assert: one gradient per image for every discriminator weight (the grade embedding and
    # the auxiliary grade head too)
    for name, p in d.named_parameters():
        assert p.grad_sample.shape == (3, *p.shape), name


def test_fit_trains_both_networks_and_charges_one_dp_step_per_real_batch(cfg, parts) -> None:
    # Prepare
    task = get_task("retina", cfg)
    train = task.load_dataset([parts / "hospital_1" / "train"])
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    carried = [(1.0, 0.1, 4)]
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, history=carried)
    # Execute
    result = task.fit(model, train, FitPlan(epochs=2, batch_size=8, lr=2e-4, seed=0, dp=dp))
    # Assert: exactly one private step per expected batch (Poisson), on top of the carried 4
    assert result.dp_steps(carried) == 2 * task.dp_steps_per_epoch(len(train), 8)
    assert result.history[0] == carried[0]
    for prefix in ("generator.", "discriminator."):
        changed = [
            k
            for k in before
            if k.startswith(prefix) and not torch.equal(before[k], model.state_dict()[k])
        ]
        assert changed, prefix
    assert not hasattr(model.discriminator, "_module")  # Opacus' hooks are gone
    # both networks' losses come back by name: they become per-round curves
    assert set(result.losses) == {"generator_loss", "discriminator_loss"}
    assert result.losses["discriminator_loss"] == result.train_loss
    assert all(math.isfinite(v) and v > 0 for v in result.losses.values())


def test_weight_average_follows_every_generator_step_travels_and_samples(cfg, parts) -> None:
    # Prepare: a GAN with a weight average (decay 0.5)
    task = get_task("retina", _retina_cfg(ema_decay=0.5))
    model = task.build_model()
    assert torch.equal(
        model.generator_ema.out.weight, model.generator.out.weight
    )  # starts as a copy
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    ema, g = model.generator_ema.out.weight, model.generator.out.weight
    # Execute: one update by hand, then a fit
    with torch.no_grad():
        g.add_(1.0)
    start = ema.clone()
    model.update_ema(0.5)
    by_hand = ema.clone()
    task.fit(
        model,
        task.load_dataset([parts / "hospital_1" / "train"]),
        FitPlan(epochs=1, batch_size=8, lr=2e-4, seed=0),
    )
    # Assert: ema = 0.5 ema + 0.5 g; the fit moved it without training it (it lags the
    # generator); it is in the state dict (travels, FedAvg averages it), samples and is
    # what registration releases
    assert torch.allclose(by_hand, start + 0.5)
    assert not torch.equal(ema, by_hand) and not torch.equal(ema, g)
    assert any(k.startswith("generator_ema.") for k in model.state_dict())
    assert task.released_model(model) is model.generator_ema
    grades = torch.tensor([0, 4])
    drawn = model.sample(grades, generator=torch.Generator().manual_seed(1))
    rng = torch.Generator().manual_seed(1)  # the codes, then the noise maps, as sample draws
    z = torch.randn(2, model.sampler.latent_dim, generator=rng)
    with torch.no_grad():
        assert torch.allclose(drawn, model.generator_ema.eval()(z, grades, noise=rng))
    # without ema_decay the GAN has no average and samples from its generator
    plain = get_task("retina", _retina_cfg(ema_decay=0.0)).build_model()
    assert plain.generator_ema is None and plain.sampler is plain.generator


def test_latent_scale_widens_the_codes_samples_draw_and_is_part_of_the_scores_key(
    cfg, parts
) -> None:
    # Prepare: one GAN, and a copy sampling codes from N(0, 2^2)
    import copy

    task = get_task("retina", cfg)
    gan = task.build_model()
    wide = copy.deepcopy(gan)
    wide.latent_scale = 2.0
    grades = torch.tensor([1, 3])
    # Execute
    drawn = wide.sample(grades, generator=torch.Generator().manual_seed(5))
    # Assert: the same seeded codes, doubled; training's N(0, 1) is untouched (same weights),
    # and the evaluation memo tells the two apart (same state dict, other samples)
    rng = torch.Generator().manual_seed(5)  # the codes, then the noise maps, as sample draws
    z = torch.randn(2, gan.sampler.latent_dim, generator=rng)
    with torch.no_grad():
        assert torch.allclose(drawn, gan.sampler.eval()(2.0 * z, grades, noise=rng))
    assert gan.latent_scale == 1.0
    test = task.load_dataset([parts / "hospital_1" / "test"])
    assert task._digest(wide) != task._digest(gan)
    assert task.evaluate(wide, test)["fid"] != task.evaluate(gan, test)["fid"]


def test_noise_inputs_vary_one_codes_image_seeded_by_the_samplers_generator() -> None:
    from privfed.tasks.retina.model import Discriminator, Generator, NoiseInput, RetinaGAN

    # Prepare: a generator with noise inputs, and one without (noise_gain 0)
    noisy = Generator(image_size=32, latent_dim=8, channels=8, conditional=True, noise_gain=0.2)
    plain = Generator(image_size=32, latent_dim=8, channels=8, conditional=True)
    z, grades = torch.randn(2, 8), torch.tensor([1, 3])
    seeded = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    # Execute
    with torch.no_grad():
        first, again = noisy(z, grades, noise=seeded()), noisy(z, grades, noise=seeded())
        other = noisy(z, grades, noise=torch.Generator().manual_seed(8))
    # Assert: one code, one seed: one image; another seed's noise maps: another image
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.01
    layers = [m for m in noisy.modules() if isinstance(m, NoiseInput)]
    assert len(layers) == 4  # after the 4x4 start's norm and each of the 3 blocks' norms
    assert all(torch.all(layer.gain == 0.2) for layer in layers)
    # noise_gain 0 adds no layer: the plain DCGAN has every weight but the noise gains
    assert not any(isinstance(m, NoiseInput) for m in plain.modules())
    gains = sum(layer.gain.numel() for layer in layers)
    assert sum(p.numel() for p in plain.parameters()) + gains == sum(
        p.numel() for p in noisy.parameters()
    )
    # and the GAN's samples (every metric's) take their noise maps from the seeded generator
    gan = RetinaGAN(noisy, Discriminator(image_size=32, channels=8, conditional=True))
    assert torch.equal(
        gan.sample(grades, generator=seeded()), gan.sample(grades, generator=seeded())
    )


def test_grade_norm_looks_the_norms_gain_and_bias_up_by_grade() -> None:
    from privfed.tasks.retina.model import GradeNorm

    # Prepare
    norm = GradeNorm(8)
    h, grades = torch.randn(3, 8, 4, 4), torch.tensor([0, 2, 2])
    plain = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        # Assert: at the start it is a plain GroupNorm (gains 1, biases 0) for every grade
        assert torch.allclose(norm(h, grades), plain(h), atol=1e-6)
        norm.bias.weight[2] = 1.0
        norm.gain.weight[2] = 3.0
        # Execute
        out = norm(h, grades)
    # Assert: grade 2's images get grade 2's gain and bias; grade 0's are untouched
    assert torch.allclose(out[0], plain(h)[0], atol=1e-6)
    assert torch.allclose(out[1:], 3.0 * plain(h)[1:] + 1.0, atol=1e-5)


def test_fit_trains_the_noise_gains_and_the_per_grade_norms(cfg, parts) -> None:
    # Prepare
    task = get_task("retina", _retina_cfg(noise_gain=0.2, grade_norm=True))
    train = task.load_dataset([parts / "hospital_1" / "train"])
    model = task.build_model()
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    # Execute
    task.fit(model, train, FitPlan(epochs=1, batch_size=8, lr=2e-4, seed=0))
    # Assert: every noise gain and every per-grade gain/bias table moved (they are weights of
    # the state dict, so they travel and are averaged)
    after = model.generator.state_dict()
    names = [k for k in before if ".gain" in k or k.endswith("bias.weight")]
    assert len(names) == 4 + 2 * 4  # 4 noise gains; 4 norms, each a gain and a bias table
    assert all(not torch.equal(before[k], after[k]) for k in names)


def test_local_fake_grades_follow_the_hospitals_grade_mix_only_without_dp(parts) -> None:
    from torch.utils.data import Subset

    # Prepare: a hospital whose training images are of grades 0 and 2 only, and a spy on the
    # grades the generator is asked for
    task = get_task("retina", _retina_cfg(fake_grades="local"))
    full = task.load_dataset([parts / "hospital_1" / "train"])
    keep = [i for i, g in enumerate(full.labels.tolist()) if g in (0, 2)]
    assert 0 < len(keep) < len(full)
    train = Subset(full, keep)
    model = task.build_model()
    asked: list[torch.Tensor] = []
    model.generator.register_forward_pre_hook(lambda _m, args: asked.append(args[1].clone()))
    # Execute
    task.fit(model, train, FitPlan(epochs=1, batch_size=8, lr=2e-4, seed=0))
    # Assert: every generated image was of a grade the hospital has, in its mix
    drawn = torch.cat(asked)
    assert set(drawn.unique().tolist()) <= {0, 2} and len(drawn.unique()) == 2
    expected = torch.bincount(full.labels[keep], minlength=5).float()
    assert torch.equal(task._fake_grade_mix(train, "local", private=False), expected)
    # a DP fit never reads the private mix, and uniform asks for every grade alike
    assert task._fake_grade_mix(train, "local", private=True) is None
    assert task._fake_grade_mix(train, "uniform", private=False) is None
    # nor does the public archive (not a hospital's images), so the public GAN is unchanged
    archive = torch.utils.data.TensorDataset(torch.zeros(4, 1, 32, 32), torch.tensor([3] * 4))
    assert task._fake_grade_mix(archive, "local", private=False) is None


def test_grade_norm_without_conditional_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="grade_norm"):
        _retina_cfg(grade_norm=True, conditional=False)


def test_an_unknown_fake_grades_value_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="fake_grades"):
        _retina_cfg(fake_grades="balanced")


def test_grade_head_learns_real_grades_privately_and_steers_the_generator(cfg) -> None:
    from opacus import GradSampleModule

    from privfed.tasks.retina.task import _fooling_losses

    # Prepare: a GAN whose discriminator has the auxiliary grade head (AC-GAN), weight 2
    task = get_task("retina", _retina_cfg(class_weight=2.0))
    model = task.build_model()
    image, grade = torch.randn(3, 1, 32, 32), torch.tensor([0, 2, 4])
    logit, grade_logits = model(image, grade, grades=True)
    ce = torch.nn.functional.cross_entropy(grade_logits, grade)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.ones(3))
    # Execute
    real = task.loss(model, [image, grade])
    adversarial, aims = _fooling_losses(model.discriminator, image, grade, 2.0)
    d = GradSampleModule(model.discriminator)
    task.loss(d, [image, grade]).backward()
    # Assert: the private real-image loss is BCE + 2 CE; the generator's extra term is 2 CE
    # of the same head on its samples; the head has per-image gradients under Opacus
    assert real.item() == pytest.approx((bce + 2 * ce).item(), rel=1e-5)
    assert aims.item() == pytest.approx(2 * ce.item(), rel=1e-5)
    assert adversarial.item() == pytest.approx(bce.item(), rel=1e-5)
    assert d._module.classify.weight.grad_sample.shape == (3, 5, d._module.classify.in_features)
    # without class_weight there is no head, and asking for grades says so
    with pytest.raises(ValueError, match="class_weight"):
        get_task("retina", _retina_cfg(class_weight=0.0)).build_model()(image, grade, grades=True)


def test_mode_seeking_term_penalizes_two_codes_giving_one_image() -> None:
    from privfed.tasks.retina.task import _mode_seeking

    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    apart = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 2.0)])
    same = torch.zeros(2, 1, 4, 4)
    # |G(z1)-G(z2)| / |z1-z2| = 2 / 1: the term is weight / 2
    assert _mode_seeking(apart, z, 3.0).item() == pytest.approx(1.5, rel=1e-4)
    # a collapsed pair is penalized without bound; weight 0 turns the term off
    assert _mode_seeking(same, z, 1.0).item() > 1e4
    assert _mode_seeking(same, z, 0.0).item() == 0.0


def test_fit_adds_the_mode_seeking_term_to_the_generator_loss(cfg, parts, monkeypatch) -> None:
    from privfed.tasks.retina import task as task_module

    weights: list[float] = []
    halves: list[bool] = []
    original = task_module._mode_seeking

    def recording(fake, z, weight):
        weights.append(weight)
        half = len(fake) // 2
        halves.append(len(fake) % 2 == 0 and half > 0)
        return original(fake, z, weight)

    monkeypatch.setattr(task_module, "_mode_seeking", recording)
    task = get_task("retina", _retina_cfg(diversity_weight=0.7))
    task.fit(
        task.build_model(),
        task.load_dataset([parts / "hospital_1" / "train"]),
        FitPlan(epochs=1, batch_size=7, lr=2e-4, seed=0),
    )
    # every generator step carries the configured weight, on an even batch of paired halves
    assert weights and set(weights) == {0.7} and all(halves)


def test_diff_augment_shifts_and_cuts_each_image_on_its_own_draw() -> None:
    from privfed.tasks.retina.augment import diff_augment

    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    shifted = diff_augment(x, ["translation"])
    # each image is itself moved by whole pixels (at most 2 = 16 / 8), the uncovered border -1
    shifts = []
    for image, out in zip(x, shifted, strict=True):
        found = None
        for dy, dx in itertools.product(range(-2, 3), repeat=2):
            expected = torch.full_like(image, -1.0)
            expected[:, max(dy, 0) : 16 + min(dy, 0), max(dx, 0) : 16 + min(dx, 0)] = image[
                :, max(-dy, 0) : 16 + min(-dy, 0), max(-dx, 0) : 16 + min(-dx, 0)
            ]
            if torch.equal(out, expected):
                found = (dy, dx)
        assert found is not None
        shifts.append(found)
    assert len(set(shifts)) > 1  # drawn per image
    cut = diff_augment(x, ["cutout"])
    holes = cut != x
    assert torch.all(cut[holes] == 0)  # the hole is mid grey
    area = holes.float().mean(dim=(1, 2, 3))
    assert torch.all(area <= 0.25) and torch.all(area > 0)
    assert torch.equal(diff_augment(x, []), x)
    # gradients reach the generator's images through every transform
    x.requires_grad_(True)
    diff_augment(x, ["color", "translation", "cutout"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_augmentation_is_refused_by_name() -> None:
    from privfed.tasks.retina.augment import POLICIES
    from privfed.tasks.retina.settings import AUGMENTATIONS

    assert set(POLICIES) == set(AUGMENTATIONS)  # what validation accepts is what fit runs
    with pytest.raises(ConfigError, match=r"augment=\['flip'\]: unknown \['flip'\]"):
        _retina_cfg(augment=["flip"])


def test_fit_augments_every_discriminator_input_real_and_generated(cfg, parts, monkeypatch) -> None:
    from privfed.tasks.retina import task as task_module

    seen: list[tuple[list[str], bool]] = []
    original = task_module.diff_augment

    def recording(images, policy):
        seen.append((list(policy), images.requires_grad))
        return original(images, policy)

    monkeypatch.setattr(task_module, "diff_augment", recording)
    task = get_task("retina", _retina_cfg(augment=["translation", "cutout"]))
    train = task.load_dataset([parts / "hospital_1" / "train"])
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, history=[])
    task.fit(task.build_model(), train, FitPlan(epochs=1, batch_size=8, lr=2e-4, seed=0, dp=dp))
    # per step: the private real batch (no gradient to its pixels) and the generated batch
    # (differentiable: the generator's step goes through the same transforms)
    assert seen and all(policy == ["translation", "cutout"] for policy, _ in seen)
    real, fake = seen[0::2], seen[1::2]
    assert len(real) == len(fake) and not any(g for _, g in real) and all(g for _, g in fake)


def test_fit_refuses_fedprox_rather_than_ignoring_it(cfg, parts) -> None:
    task = get_task("retina", cfg)
    train = task.load_dataset([parts / "hospital_1" / "train"])
    with pytest.raises(ValueError, match="proximal_mu=0.1"):
        task.fit(
            task.build_model(), train, FitPlan(epochs=1, batch_size=8, lr=1e-3, proximal_mu=0.1)
        )


def test_an_empty_poisson_batch_is_a_zero_gradient_step(cfg) -> None:
    task = get_task("retina", cfg)
    model = task.build_model()
    loss = task.loss(model, [torch.zeros(0, 1, 32, 32), torch.zeros(0, dtype=torch.long)])
    loss.backward()
    assert loss.item() == 0.0
    assert all(not p.grad.any() for p in model.discriminator.parameters() if p.grad is not None)


# -- public pretraining ------------------------------------------------------------------------
def test_public_archive_is_seeded_ct_slices_of_five_levels_black_outside_the_body() -> None:
    # Execute
    images, levels = public_slices(10, size=32)
    again, _ = public_slices(10, size=32)
    other, _ = public_slices(10, size=32, seed=1)
    # Assert: seeded, every level twice, air black at the corners, a body in the middle
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert np.bincount(levels, minlength=len(LEVELS)).tolist() == [2] * len(LEVELS)
    assert (images[:, 0, 0] == 0).all() and (images[:, 16, 16] > 0.2).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_every_model_starts_from_the_public_gan_pretrained_on_ct_slices_only(cfg) -> None:
    # Prepare
    from privfed.tasks.retina.public import public_model

    task = get_task("retina", cfg)
    fresh = task.build_model().state_dict()
    # Execute
    start = task.initial_model().state_dict()
    public = public_model(task)
    # Assert: model.init public (the default) gives the public build's weights, which
    # pretraining moved away from the seeded fresh GAN, both networks
    assert cfg.model.init == "public"
    assert all(torch.equal(start[k], public.state[k]) for k in start)
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(start[k], fresh[k]) for k in start if k.startswith(prefix))
    assert public.meta["images"] == cfg.model.retina.public_images
    assert public.meta["levels"] == list(LEVELS)
    assert task.init_description().startswith("the task's public model")


# -- metrics ------------------------------------------------------------------------------------
def test_train_on_synthetic_uses_a_synthetic_training_set_like_the_real_one(cfg, parts) -> None:
    # Prepare: record what the scorer asks the generator for
    task = get_task("retina", cfg)
    gan = task.build_model()
    asked: list[torch.Tensor] = []
    sample = gan.sample

    def recording(grades, **kwargs):
        asked.append(grades.clone())
        return sample(grades, **kwargs)

    gan.sample = recording
    train = task.load_dataset([parts / h / "train" for h in HOSPITALS])
    test = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    # Execute
    score_generator(
        gan, test.images, test.labels, train.images, train.labels, samples=10, epochs=1, seed=0
    )
    # Assert: one request of as many images as the real training set, with its grade mix
    # (TSTR and TRTR then differ only in whether the training images are real)
    (tstr_grades,) = [g for g in asked if len(g) == len(train.labels)]
    assert torch.equal(tstr_grades.sort().values, train.labels.sort().values)


def test_a_larger_synthetic_set_keeps_the_grade_mix_and_trains_on_all_of_it(
    cfg, parts, monkeypatch
) -> None:
    # Prepare: record the grades the generator is asked for and what the classifier trains on
    from privfed.tasks.retina import metrics

    task = get_task("retina", cfg)
    gan = task.build_model()
    train = task.load_dataset([parts / h / "train" for h in HOSPITALS])
    test = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    asked: list[torch.Tensor] = []
    sample = gan.sample
    gan.sample = lambda grades, **kw: asked.append(grades.clone()) or sample(grades, **kw)
    trained_on: list[torch.Tensor] = []
    original = metrics.train_classifier
    monkeypatch.setattr(
        metrics,
        "train_classifier",
        lambda images, labels, **kw: trained_on.append(labels) or original(images, labels, **kw),
    )
    classifier = metrics.small_cnn(5).eval()
    # Execute
    accuracy = metrics.train_on_synthetic(
        gan, classifier, test.images, test.labels, train.labels, epochs=1, seed=0, multiple=3
    )
    # Assert: three times the real training set's grades, every one trained on
    expected = train.labels.repeat(3).sort().values
    assert torch.equal(torch.cat(asked).sort().values, expected)
    assert torch.equal(trained_on[0].sort().values, expected)
    assert 0.0 <= accuracy <= 1.0


def test_grade_confusions_add_up_to_the_evaluations_accuracies(cfg, parts) -> None:
    from benchmarks.retina import _grade_confusions

    # Prepare: one GAN, the pooled and per-hospital splits the benchmark loads
    task = get_task("retina", cfg)
    gan = task.build_model()
    train = task.load_dataset([parts / h / "train" for h in HOSPITALS])
    test = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    tests = {h: task.load_dataset([parts / h / "test"]) for h in HOSPITALS}
    # Execute
    view = _grade_confusions(gan, train, test, tests, cfg)
    scores = task.evaluate(gan, test)
    # Assert: each matrix's diagonal is the evaluation's accuracy (same classifiers, samples
    # and seeds); fidelity's rows are the generated training set's grades, as many as the
    # real training set's; the hospitals' accuracies weigh up to the pooled ones
    trtr, tstr, fidelity = (np.array(view[k]) for k in ("trtr", "tstr", "fidelity"))
    n = len(test.labels)
    assert trtr.sum() == tstr.sum() == n
    assert np.trace(trtr) / n == pytest.approx(scores["trtr_accuracy"])
    assert np.trace(tstr) / n == pytest.approx(scores["tstr_accuracy"])
    assert fidelity.sum(axis=1).tolist() == np.bincount(train.labels, minlength=5).tolist()
    per = view["per_hospital"]
    weighted = sum(v["n"] * v["tstr_accuracy"] for v in per.values()) / n
    assert weighted == pytest.approx(scores["tstr_accuracy"])


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_kid_of_a_copy_is_small() -> None:
    # Prepare: b is a shifted by c, so both covariances are equal and FID = ||c||^2
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 4))
    c = np.array([1.0, 2.0, 0.0, 2.0])
    # Execute / Assert
    assert fid(a, a + c) == pytest.approx(9.0, abs=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert abs(kid(a, rng.normal(size=(200, 4)))) < 0.05 < kid(a, a + c)


def test_precision_recall_and_nearest_distances_by_hand() -> None:
    # Prepare: real points 0..9 on a line; fakes half on it, half far away
    real = np.arange(10, dtype=np.float64)[:, None]
    fake = np.array([[0.5], [3.5], [100.0], [200.0]])
    # Execute
    precision, recall = precision_recall(real, fake, k=3)
    # Assert: 2 of 4 fakes inside a real 3-NN ball (radius 3 around 0, 3); the fakes' balls
    # (3rd neighbour: 0.5 -> 200 at 199.5, ...) are wide enough to cover every real point
    assert precision == 0.5 and recall == 1.0
    # RMS over 4 pixels: an image 1 away in every pixel is at distance 1
    ref = torch.zeros(2, 1, 2, 2)
    ref[1] = 5.0
    assert nearest_distances(torch.ones(1, 1, 2, 2), ref).tolist() == [1.0]


def test_evaluate_scores_every_figure_and_uses_the_hospitals_training_images(cfg, parts) -> None:
    # Prepare
    task = get_task("retina", cfg)
    test = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    model = task.build_model()
    # Execute
    scores = task.evaluate(model, test)
    again = task.evaluate(model, test)
    # Assert: an untrained generator's samples are easy to spot and far from real images
    assert scores == again
    assert scores["fid"] > 0 and scores["realism"] < 0.5
    assert 0.0 <= scores["tstr_accuracy"] <= 1.0 and 0.0 <= scores["trtr_accuracy"] <= 1.0
    assert scores["nn_ratio"] > 1.0 and scores["copy_rate"] == 0.0
    assert task._train_sets  # the pooled training folders of the same hospitals
    (key,) = task._train_sets
    assert sorted(Path(k).parent.name for k in key) == HOSPITALS


def test_epoch_selection_scores_fid_alone_without_training_the_other_classifiers(
    cfg, parts, monkeypatch
) -> None:
    from privfed.tasks.retina import metrics

    # Prepare
    task = get_task("retina", cfg)
    val = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    model = task.build_model()
    full = get_task("retina", cfg).evaluate(model, val)["fid"]  # warms the feature classifier
    trained: list[int] = []
    original = metrics.train_classifier
    monkeypatch.setattr(
        metrics, "train_classifier", lambda *a, **k: trained.append(1) or original(*a, **k)
    )
    # Execute
    score = task.selection_score(model, val)
    # Assert: the same FID as evaluate's (same samples, same features), no classifier trained
    assert score == pytest.approx(full, rel=1e-9)
    assert trained == []


def test_report_figures_and_section_show_sample_grids(cfg, parts, tmp_path) -> None:
    task = get_task("retina", cfg)
    test = task.load_dataset([parts / h / "test" for h in HOSPITALS])
    model = task.build_model()
    figures = task.report_figures(model, test, tmp_path, label="federated")
    section = task.report_section({"federated": model, "local:hospital_1": model}, test)
    assert [p.name for p in figures] == ["samples_federated.png", "real_test.png"]
    assert (tmp_path / "samples_local_hospital_1.png").stat().st_size > 1000
    assert "| federated |" in section and "figures/samples_local_hospital_1.png" in section


def test_retina_has_optimizer_and_dp_settings_of_its_own(cfg) -> None:
    from privfed.training import dp_batch_size, dp_lr, dp_max_grad_norm

    task = get_task("retina", cfg)
    # tiny profile: model.retina.{batch_size, dp_batch_size} 16, lr and dp_lr 2e-4, clip 1.0
    assert (task.train_batch_size(), task.train_lr(), task.baseline_epochs(10)) == (16, 2e-4, 2)
    assert (dp_batch_size(task, cfg), dp_lr(task, cfg), dp_max_grad_norm(task, cfg)) == (
        16,
        2e-4,
        1.0,
    )
    assert task.primary_metric == "fid" and task.higher_is_better is False
