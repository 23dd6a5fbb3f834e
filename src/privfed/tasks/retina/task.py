"""Task ``retina``: hospitals jointly train a class-conditional DCGAN of fundus images (FedGAN).

The units partitioning deals out are images (one image per patient). The model is one module
holding the generator and the discriminator, so FedAvg averages both. :meth:`RetinaTask.fit`
alternates discriminator and generator steps; with DP-SGD only the discriminator's step on
real images is private (and accounted, once per step), the rest is post-processing of it.
The primary metric is the Fréchet distance in the feature space of a severity classifier
trained on the hospitals' real training images (lower is better); see :mod:`.metrics`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from privfed.io import DataError, read_json
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.retina.augment import diff_augment
from privfed.tasks.retina.layout import (
    IMAGE_COLUMN,
    LABEL_COLUMN,
    LABELS_FILE,
    hospital_folders,
    read_labels,
)

if TYPE_CHECKING:
    from privfed.tasks.retina.settings import RetinaModelSection
    from privfed.tasks.retina.transforms import RetinaDataset
    from privfed.training import FitPlan, LocalResult

__all__ = ["RetinaTask"]

log = logging.getLogger(__name__)

LAYOUT = "<hospital>/<image>.png + <hospital>/labels.csv (image, grade 0-4)"
#: Metrics the report's retina table shows, in order.
REPORT_METRICS = (
    "fid",
    "kid_x1000",
    "precision",
    "recall",
    "realism",
    "tstr_accuracy",
    "trtr_accuracy",
    "tstr_ratio",
    "nn_ratio",
    "copy_rate",
)


def _bce(logits: torch.Tensor, target: float, reduction: str = "mean") -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, target), reduction=reduction
    )


def _fooling_losses(
    disc: nn.Module, fake: torch.Tensor, grade: torch.Tensor, class_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's two terms from one discriminator pass: BCE of its score against "real",
    and AC-GAN's ``class_weight`` x cross-entropy of its grade head against the grades the
    samples were drawn for (0 without a head)."""
    if class_weight <= 0:
        return _bce(disc(fake, grade), 1.0), fake.new_zeros(())
    logit, grade_logits = disc(fake, grade, grades=True)
    return _bce(logit, 1.0), class_weight * F.cross_entropy(grade_logits, grade)


def _mode_seeking(fake: torch.Tensor, z: torch.Tensor, weight: float) -> torch.Tensor:
    """MSGAN's term (Mao et al., 2019): ``weight / (|G(z1)-G(z2)| / |z1-z2|)``, same grades.

    The batch's two halves share their grades, so the ratio asks two latent codes of one
    grade to give images as far apart as the codes are: against the collapse of a grade to
    one image, which a classifier trained on the samples cannot learn from.
    """
    if weight <= 0:
        return fake.new_zeros(())
    half = len(fake) // 2
    image_gap = (fake[:half] - fake[half : 2 * half]).abs().mean()
    code_gap = (z[:half] - z[half : 2 * half]).abs().mean()
    return weight / (image_gap / code_gap + 1e-5)


@contextlib.contextmanager
def _hooks_off(module: nn.Module) -> Iterator[None]:
    """Opacus' per-sample-gradient hooks off while the block runs (no-op without Opacus).

    The discriminator's fake-image and generator passes read no private data; their
    per-sample gradients would cost time and must not leak into the next private step.
    """
    if not hasattr(module, "disable_hooks"):
        yield
        return
    module.disable_hooks()
    try:
        yield
    finally:
        module.enable_hooks()


def _copy_images(folder: Path, frame: pd.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in frame[IMAGE_COLUMN]:
        path = folder / str(name)
        if path.is_file():  # a missing file is validation's to report, by name
            shutil.copyfile(path, out_dir / path.name)


def _retina_base(dataset: Dataset) -> RetinaDataset | None:
    """The hospital images behind ``dataset`` (itself or a Subset's); None for other data,
    such as the public GAN's archive (a TensorDataset)."""
    from privfed.tasks.retina.transforms import RetinaDataset

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return base if isinstance(base, RetinaDataset) else None


def _draw_grades(mix: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """``n`` grades for generated images: uniform over 0-4 (``mix`` None) or drawn from ``mix``
    (grade counts); both from torch's seeded global generator."""
    if mix is None:
        return torch.randint(0, 5, (n,), device=device)
    return torch.multinomial(mix, n, replacement=True).to(device)


class RetinaTask(Task):
    name = "retina"
    #: SciPy's parts the ClientApp's scoring and preprocessing use
    runtime_imports = ("scipy.linalg", "scipy.ndimage")
    primary_metric = "fid"
    higher_is_better = False
    privacy_unit = "one patient (each fundus image is one patient's eye)"
    example_noun = "image"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._scores: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        self._train_sets: dict[tuple[str, ...], RetinaDataset] = {}
        self._figures_dir: Path | None = None

    def _settings(self) -> RetinaModelSection:
        return self.cfg.model.retina

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        from privfed.tasks.retina.generate import generate_hospitals

        cfg = self.cfg
        g = cfg.generate_data.retina
        written = generate_hospitals(
            cfg.base.hospitals,
            Path(out_dir),
            seed=cfg.base.seed,
            images_per_hospital=g.images_per_hospital,
            image_size=g.image_size,
        )
        return {
            "task": self.name,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            "site_column": "hospital",  # hospitals are folders; the key keeps ingest's contract
            "layout": LAYOUT,
            **written,
        }

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """Copy ``source/<hospital>/`` folders (images + labels.csv); ``site_column`` unused.

        The labels CSV is copied as it is and only the files it lists are copied: what they
        hold (size, content, grade) is validation's to check, so a broken image reaches the
        report by name instead of stopping here.
        """
        folders = hospital_folders(Path(source))
        if len(folders) < 2:
            raise DataError(
                f"{source}: found {len(folders)} hospital folder(s) ({', '.join(folders)}); "
                "a federation needs at least 2"
            )
        counts = {}
        for hospital, folder in folders.items():
            frame = read_labels(folder)
            _copy_images(folder, frame, Path(out_dir) / hospital)
            shutil.copyfile(folder / LABELS_FILE, Path(out_dir) / hospital / LABELS_FILE)
            counts[hospital] = len(frame)
        return {
            "task": self.name,
            "hospitals": list(folders),
            "layout": LAYOUT,
            "counts": {"images": counts},
        }

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        from privfed.tasks.retina import checks  # GX is slow to import; only here

        folders = hospital_folders(Path(raw_dir))
        manifest = Path(raw_dir) / "manifest.json"
        hospitals = read_json(manifest)["hospitals"] if manifest.is_file() else list(folders)
        table = checks.image_table(list(folders.values()), min_size=self._settings().image_size)
        return checks.table_checks(
            table, hospitals=hospitals, min_images=self.cfg.validate_data.min_cases_per_hospital
        )

    def units(self, raw_dir: Path) -> pd.DataFrame:
        """One row per image: ``unit_id`` is ``<hospital>/<file>``, ``label`` the DR grade."""
        rows = []
        for hospital, folder in hospital_folders(Path(raw_dir)).items():
            frame = read_labels(folder)
            for name, grade in zip(frame[IMAGE_COLUMN], frame[LABEL_COLUMN], strict=True):
                rows.append(
                    {"unit_id": f"{hospital}/{name}", "hospital": hospital, "label": int(grade)}
                )
        return pd.DataFrame(rows, columns=["unit_id", "hospital", "label"])

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        folders = hospital_folders(Path(raw_dir))
        labels = {h: read_labels(f).set_index(IMAGE_COLUMN) for h, f in folders.items()}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows, used = [], set()
        for unit in unit_ids:
            hospital, _, name = unit.partition("/")
            if hospital not in labels or name not in labels[hospital].index:
                raise DataError(f"{raw_dir}: no image for unit id {unit!r}")
            target = name if name not in used else f"{hospital}__{name}"
            used.add(target)
            shutil.copyfile(folders[hospital] / name, out_dir / target)
            rows.append(
                {IMAGE_COLUMN: target, LABEL_COLUMN: int(labels[hospital].loc[name, LABEL_COLUMN])}
            )
        pd.DataFrame(rows, columns=[IMAGE_COLUMN, LABEL_COLUMN]).to_csv(
            out_dir / LABELS_FILE, index=False
        )

    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        from privfed.tasks.retina.transforms import RetinaDataset

        return RetinaDataset([Path(d) for d in split_dirs], self._settings())

    # -- optimizer settings -----------------------------------------------------------------
    def train_batch_size(self) -> int:
        return self._settings().batch_size

    def train_lr(self) -> float:
        """The discriminator's step size; the generator's is ``model.retina.g_lr``."""
        return self._settings().lr

    def baseline_epochs(self, epochs: int) -> int:
        return self._settings().baseline_epochs

    def dp_batch_size(self) -> int:
        return self._settings().dp_batch_size

    def dp_lr(self) -> float:
        return self._settings().dp_lr

    def dp_max_grad_norm(self) -> float:
        return self._settings().dp_max_grad_norm

    def public_state(self) -> dict[str, torch.Tensor]:
        """The GAN pretrained on the public CT-slice archive (:mod:`.public`), cached."""
        from privfed.tasks.retina.public import public_model

        return public_model(self).state

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        from privfed.tasks.retina.model import build_gan

        torch.manual_seed(self.cfg.base.seed)
        return build_gan(self._settings())

    def released_model(self, model: nn.Module) -> nn.Module:
        """Only the generator that samples is registered (its weight average where there is
        one): the discriminator saw the real images."""
        return model.sampler

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """The discriminator's loss on real images (labelled real), plus its grade head's
        cross-entropy on them (``class_weight``): what DP-SGD clips."""
        image, grade = batch[0], batch[1]
        weight = self._settings().class_weight
        if len(image) == 0:
            # Poisson sampling can draw an empty batch; GroupNorm cannot run on none. A
            # zero-weighted blank image keeps the step (Opacus adds its noise and counts it)
            # with exactly zero gradient.
            return (
                self._real_loss(
                    model, image.new_zeros((1, *image.shape[1:])), grade.new_zeros(1), weight
                )
                * 0.0
            )
        return self._real_loss(model, image, grade, weight)

    @staticmethod
    def _real_loss(
        model: nn.Module, image: torch.Tensor, grade: torch.Tensor, weight: float
    ) -> torch.Tensor:
        if weight <= 0:
            return _bce(model(image, grade), 1.0)
        logit, grade_logits = model(image, grade, grades=True)
        return _bce(logit, 1.0) + weight * F.cross_entropy(grade_logits, grade)

    def fit(self, model: nn.Module, dataset: Dataset, plan: FitPlan) -> LocalResult:
        """Alternate, per batch of real images: a discriminator step on them (the only private
        step: through :func:`~privfed.training.private_training` with ``plan.dp``), a
        discriminator step on generated images, a generator step.

        Generated images use a fixed batch size, never the Poisson batch size, and with DP
        uniformly drawn grades, never the hospital's grade mix, so the two non-private steps
        depend on the private data only through the discriminator's privatized weights
        (without DP, ``model.retina.fake_grades: local`` draws them from that mix). The
        generator's loss adds the mode-seeking term (``model.retina.diversity_weight``) and
        each of its steps updates its weight average (``ema_decay``): both read no real image.
        """
        from privfed.training import LocalResult, only_trainable, private_training

        if plan.proximal_mu > 0 or plan.grad_correction is not None:
            raise ValueError(
                "task retina's GAN fit has no FedProx term or SCAFFOLD correction; use "
                "train_federated.strategy fedavg, an adaptive server optimizer or a robust one "
                f"(got proximal_mu={plan.proximal_mu}, grad_correction set: "
                f"{plan.grad_correction is not None})"
            )
        s = self._settings()
        device = plan.device or torch.device("cpu")
        # DP's Poisson sampling and noise must be secret: reseeded from OS entropy (as the
        # default fit does), so DP runs are not bitwise reproducible
        seed = plan.seed if plan.dp is None else int.from_bytes(os.urandom(8), "little")
        torch.manual_seed(seed)
        model.to(device).train()
        d, g = model.discriminator, model.generator
        latent = g.latent_dim
        loader = DataLoader(
            dataset,
            batch_size=plan.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(plan.seed),
        )
        mix = self._fake_grade_mix(dataset, s.fake_grades, private=plan.dp is not None)
        d_real_opt = torch.optim.Adam(d.parameters(), lr=plan.lr, betas=(0.5, 0.999))
        d_fake_opt = torch.optim.Adam(d.parameters(), lr=plan.lr, betas=(0.5, 0.999))
        g_opt = torch.optim.Adam(g.parameters(), lr=s.g_lr, betas=(0.5, 0.999))
        n_fake = 2 * max(plan.batch_size // 2, 1)
        d_total = g_total = 0.0
        steps = 0
        with (
            only_trainable(model, plan.dp.trainable if plan.dp else None),
            private_training(d, d_real_opt, loader, plan.dp) as private,
        ):
            disc, d_real_opt = private.module, private.optimizer
            for epoch in range(plan.epochs):
                model.train()  # plan.epoch_end may have scored the model in eval mode
                d_epoch = g_epoch = 0.0
                n_batches = 0
                for image, grade in private.loader:
                    image, grade = image.to(device), grade.to(device)
                    # 1. discriminator on real images: the private step
                    d_real_opt.zero_grad(set_to_none=True)
                    real_loss = self.loss(disc, [diff_augment(image, s.augment), grade])
                    real_loss.backward()
                    d_real_opt.step()
                    # 2. discriminator on generated images: no private data. Grades come
                    # in two equal halves, so the mode-seeking term can pair samples
                    z = torch.randn(n_fake, latent, device=device)
                    fake_grade = _draw_grades(mix, n_fake // 2, device).repeat(2)
                    with _hooks_off(disc):
                        fake = g(z, fake_grade)
                        d_fake_opt.zero_grad(set_to_none=True)
                        seen = diff_augment(fake, s.augment)  # what D judges, as the reals
                        fake_loss = _bce(disc(seen.detach(), fake_grade), 0.0)
                        fake_loss.backward()
                        d_fake_opt.step()
                        # 3. generator: fool the (privatized) discriminator
                        g_opt.zero_grad(set_to_none=True)
                        g_loss, aims = _fooling_losses(disc, seen, fake_grade, s.class_weight)
                        diverse = _mode_seeking(fake, z, s.diversity_weight)
                        (g_loss + aims + diverse).backward()
                        g_opt.step()
                        model.update_ema(s.ema_decay)
                    for p in d.parameters():  # the generator step's gradient on D is discarded
                        p.grad = None
                    d_epoch += real_loss.item() + fake_loss.item()
                    g_epoch += g_loss.item()
                    n_batches += 1
                d_total += d_epoch
                g_total += g_epoch
                steps += n_batches
                log.info(
                    "%s epoch %d/%d: discriminator loss %.4f, generator loss %.4f",
                    plan.label or "train",
                    epoch + 1,
                    plan.epochs,
                    d_epoch / max(n_batches, 1),
                    g_epoch / max(n_batches, 1),
                )
                if plan.epoch_end is not None:
                    plan.epoch_end(epoch + 1)
        model.train()
        return LocalResult(
            train_loss=d_total / max(steps, 1),
            num_examples=len(dataset),
            history=private.history(),
            losses={
                "discriminator_loss": d_total / max(steps, 1),
                "generator_loss": g_total / max(steps, 1),
            },
        )

    def _fake_grade_mix(
        self, dataset: Dataset, fake_grades: str, *, private: bool
    ) -> torch.Tensor | None:
        """The hospital's grade counts where ``fake_grades: local`` asks for them in a fit
        without DP; None: uniform grades. A DP fit never reads the private mix, and the
        public GAN's archive (not a hospital's images: levels dealt evenly) is never skewed."""
        if fake_grades == "local" and private:
            log.info("fake_grades local: this DP fit draws uniform grades (the mix is private)")
        if fake_grades == "uniform" or private or _retina_base(dataset) is None:
            return None
        _, _, labels, _ = self._real(dataset)
        return torch.bincount(labels, minlength=5).float()

    # -- evaluation -------------------------------------------------------------------------
    def _base(self, dataset: Dataset) -> RetinaDataset:
        base = _retina_base(dataset)
        if base is None:
            raise TypeError(
                f"retina needs a RetinaDataset or a Subset of one, got {type(dataset).__name__}"
            )
        return base

    def _train_set(self, dataset: RetinaDataset) -> RetinaDataset:
        from privfed.tasks.retina.metrics import reference_train_dirs

        dirs = reference_train_dirs(dataset.split_dirs)
        key = tuple(str(d) for d in dirs)
        if key not in self._train_sets:
            self._train_sets[key] = self.load_dataset(dirs)
        return self._train_sets[key]

    @staticmethod
    def _digest(model: nn.Module) -> str:
        h = hashlib.sha256(repr(getattr(model, "latent_scale", None)).encode())
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def _real(
        self, dataset: Dataset
    ) -> tuple[RetinaDataset, torch.Tensor, torch.Tensor, tuple[str, ...]]:
        """``dataset``'s base, its real images and grades, and their files (a Subset's own)."""
        base = self._base(dataset)
        if not isinstance(dataset, Subset):
            return base, base.images, base.labels, tuple(str(f) for f in base.files)
        idx = list(dataset.indices)
        files = tuple(str(base.files[i]) for i in idx)
        return base, base.images[idx], base.labels[idx], files

    def selection_score(self, model: nn.Module, val: Dataset) -> float:
        """FID alone picks a baseline's epoch: :meth:`evaluate` also trains a train-on-
        synthetic and a realism classifier, which cost more than the epoch's training."""
        from privfed.tasks.retina.metrics import generator_fid

        base, images, labels, files = self._real(val)
        key = (self._digest(model), files)
        if key in self._scores:
            return float(self._scores[key]["fid"])
        return self._scored_by(generator_fid, model, base, images, labels)

    def _scored_by(
        self,
        scorer: Any,
        model: nn.Module,
        base: RetinaDataset,
        images: torch.Tensor,
        labels: torch.Tensor,
    ) -> Any:
        """``scorer`` (a :mod:`.metrics` function) of ``model`` against these real images, with
        the same hospitals' training images and the ``model.retina`` evaluation settings."""
        s = self._settings()
        train = self._train_set(base)
        return scorer(
            model,
            images,
            labels,
            train.images,
            train.labels,
            samples=s.eval_samples,
            epochs=s.evaluator_epochs,
            seed=self.cfg.base.seed,
        )

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        """The figures of :mod:`.metrics` on ``dataset``'s real images, and the
        discriminator's loss on them (``loss``). Scores are memoized per model weights and
        image files, so the report's table reuses the evaluation stage's figures."""
        from privfed.tasks.retina.metrics import score_generator

        base, images, labels, files = self._real(dataset)
        key = (self._digest(model), files)
        if key in self._scores:
            return dict(self._scores[key])
        out = self._scored_by(score_generator, model, base, images, labels)
        out["loss"] = float(np.mean(self.example_losses(model, dataset)))
        out["n"] = len(labels)
        self._scores[key] = out
        return dict(out)

    def example_losses(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> np.ndarray:
        """The discriminator's loss on each real image as real: the membership signal (a
        discriminator that memorized its training images scores them as more real)."""
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        out = []
        try:
            with torch.no_grad():
                for image, grade in DataLoader(dataset, batch_size=batch_size):
                    logits = model(image.to(device), grade.to(device))
                    out.append(_bce(logits, 1.0, reduction="none").cpu().numpy())
        finally:
            model.train(was)
        return np.concatenate(out).astype(np.float64) if out else np.empty(0)

    def report_figures(
        self, model: nn.Module, dataset: Dataset, out_dir: Path, *, label: str = ""
    ) -> list[Path]:
        """A sample grid of ``model`` (rows: grades) and a grid of real test images."""
        from privfed.tasks.retina.figures import real_grid, sample_grid

        base = self._base(dataset)
        out_dir = Path(out_dir)
        self._figures_dir = out_dir  # report_section adds every other model's grid here
        seed = self.cfg.base.seed
        return [
            sample_grid(
                model,
                out_dir / f"samples_{label or 'model'}.png",
                title=f"{label} samples",
                seed=seed,
            ),
            real_grid(
                base.images, base.labels, out_dir / "real_test.png", title="real test images"
            ),
        ]

    def report_section(self, models: Mapping[str, nn.Module], dataset: Dataset) -> str:
        """Every model's generator figures on the pooled test set, and their sample grids."""
        from privfed.tasks.retina.figures import sample_grid

        header = "| model | " + " | ".join(REPORT_METRICS) + " |\n"
        header += "|---" * (len(REPORT_METRICS) + 1) + "|\n"
        rows = []
        for name, model in models.items():
            scores = self.evaluate(model, dataset)
            rows.append(
                f"| {name} | " + " | ".join(f"{scores[k]:.3f}" for k in REPORT_METRICS) + " |"
            )
        text = (
            "## Generator quality, memorization (retina)\n\n"
            "Pooled test set. fid / kid_x1000: distances in the feature space of a severity "
            "classifier trained on the hospitals' real training images (lower is better; they "
            "compare PrivFed runs, not published FIDs). realism: mean real-probability a "
            "discriminator trained on half of the real test images and half of the samples "
            "gives held-out samples (0.5: indistinguishable). tstr_accuracy: a classifier "
            "trained only on generated images, scored on the real images; trtr_accuracy: the "
            "same classifier trained on real training images. Memorization check: nn_ratio is "
            "the median distance of a sample to its nearest real training image over that of "
            "an unseen real image (< 1: samples sit closer to training patients than new "
            "patients do); copy_rate: share of samples nearer a training image than 95 % of "
            "unseen images are. docs/retina.md defines each.\n\n" + header + "\n".join(rows) + "\n"
        )
        if self._figures_dir is not None:
            grids = []
            for name, model in models.items():
                safe = name.replace(":", "_")
                path = sample_grid(
                    model,
                    self._figures_dir / f"samples_{safe}.png",
                    title=f"{name} samples",
                    seed=self.cfg.base.seed,
                )
                grids.append(f"![{name}](figures/{path.name})\n")
            text += "\n### Sample grids (rows: DR grade 0-4; same latent codes)\n\n" + "".join(
                grids
            )
        return text
