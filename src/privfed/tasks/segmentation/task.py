"""Task ``segmentation``: federated brain-tumour segmentation of multimodal MRI with MONAI.

Data are BraTS-layout case folders per hospital (T1, T1c, T2, FLAIR and a label of 1 necrotic
core, 2 oedema, 3 enhancing tumour); the units that partitioning deals out are cases. The
model is a MONAI UNet with instance (or group) norm trained with DiceCE on the four mutually
exclusive classes; evaluation slides a window over each volume and scores Dice and HD95 on the
overlapping BraTS regions (tumour core, whole tumour, enhancing tumour).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from privfed.io import DataError, read_json
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.segmentation.layout import (
    LABEL,
    MODALITIES,
    case_dirs,
    find_case_file,
    hospital_case_dirs,
)

if TYPE_CHECKING:
    from privfed.tasks.segmentation.settings import SegmentationModelSection

__all__ = ["SegmentationTask"]

LAYOUT = "<hospital>/<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz"


def _copy_case(case_dir: Path, out_dir: Path) -> None:
    """Copy the case's modality and label files (and nothing else) to ``out_dir/<case_id>``."""
    target = Path(out_dir) / case_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for kind in (*MODALITIES, LABEL):
        path = find_case_file(case_dir, kind)
        if path is not None:  # a missing file is validation's to report, with the case id
            shutil.copyfile(path, target / path.name)


def _loss_fn() -> nn.Module:
    from monai.losses import DiceCELoss

    # batch=False: Dice per case, then the batch mean, so one case's loss does not depend on
    # the others' (DP-SGD clips per-sample gradients of a mean of per-sample losses).
    # include_background=False: Dice on the tumour classes only (CE still sees background).
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=False)


class SegmentationTask(Task):
    name = "segmentation"
    #: MONAI's packages the ClientApp loads data, trains and scores with (monai.data alone
    #: took 5 s per forked task and round: the cached split unpickles MONAI's datasets)
    runtime_imports = (
        "monai.data",
        "monai.transforms",
        "monai.networks.nets",
        "monai.losses",
        "monai.inferers",
        "monai.metrics",
        "nibabel",
    )
    primary_metric = "dice_mean"
    higher_is_better = True
    privacy_unit = "one patient (each case is one patient's scan)"

    def _settings(self) -> SegmentationModelSection:
        """``model.segmentation``."""
        return self.cfg.model.segmentation

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        from privfed.tasks.segmentation.generate import generate_hospitals

        g = cfg.generate_data.segmentation
        written = generate_hospitals(
            cfg.base.hospitals,
            Path(out_dir),
            seed=cfg.base.seed,
            cases_per_hospital=g.cases_per_hospital,
            volume_size=g.volume_size,
            spacing_mm=g.spacing_mm,
        )
        return {
            "task": self.name,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            # hospitals are folders; the key keeps ingest's contract for every task
            "site_column": "hospital",
            "layout": LAYOUT,
            **written,
        }

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """Copy ``source/<hospital>/<case_id>/`` folders (BraTS layout); ``site_column`` unused.

        Only the four modality files and the label are copied; what they hold is validation's
        to check, so a broken case reaches the report with its id instead of stopping here.
        """
        hospitals = hospital_case_dirs(Path(source))
        if len(hospitals) < 2:
            raise DataError(
                f"{source}: found {len(hospitals)} hospital folder(s) ({', '.join(hospitals)}); "
                "a federation needs at least 2"
            )
        for hospital, cases in hospitals.items():
            for case in cases:
                _copy_case(case, Path(out_dir) / hospital)
        return {
            "task": self.name,
            "hospitals": list(hospitals),
            "layout": LAYOUT,
            "counts": {"cases": {h: len(c) for h, c in hospitals.items()}},
        }

    def _cases(self, raw_dir: Path) -> list[tuple[str, Path]]:
        return [(h, c) for h, cases in hospital_case_dirs(Path(raw_dir)).items() for c in cases]

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        cfg = self.cfg
        from privfed.tasks.segmentation import checks  # GX is slow to import; only here

        manifest_path = Path(raw_dir) / "manifest.json"
        cases = self._cases(raw_dir)
        hospitals = (
            read_json(manifest_path)["hospitals"]
            if manifest_path.is_file()
            else sorted({h for h, _ in cases})
        )
        return checks.table_checks(
            checks.case_table(cases),
            hospitals=hospitals,
            min_cases=cfg.validate_data.min_cases_per_hospital,
        )

    def units(self, raw_dir: Path) -> pd.DataFrame:
        """Cases; ``label`` is the whole-tumour size class (small/large about the cohort median).

        The label only stratifies splits (and skews Dirichlet partitions by tumour size).
        """
        import nibabel as nib

        rows = []
        for hospital, case in self._cases(raw_dir):
            img = nib.load(str(find_case_file(case, LABEL)))
            voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000.0
            wt_ml = float((np.asarray(img.dataobj) > 0).sum()) * voxel_ml
            rows.append({"unit_id": case.name, "hospital": hospital, "wt_ml": wt_ml})
        frame = pd.DataFrame(rows)
        median = float(frame["wt_ml"].median())
        frame["label"] = np.where(frame["wt_ml"] > median, "large", "small")
        return frame[["unit_id", "hospital", "label"]]

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        by_id = {c.name: c for _, c in self._cases(raw_dir)}
        unknown = sorted(set(unit_ids) - set(by_id))
        if unknown:
            raise DataError(f"{raw_dir}: no case folder for unit id(s) {unknown[:5]}")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for unit in unit_ids:
            _copy_case(by_id[unit], Path(out_dir))

    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        """Cases under ``split_dirs``; random crops and augmentation when all are ``train``.

        The partition layout names each split folder ``train``, ``val`` or ``test``; only
        training data gets random transforms, so evaluation is deterministic.
        """
        cfg = self.cfg
        from privfed.tasks.segmentation.transforms import CaseDataset

        if not split_dirs:
            raise ValueError("load_dataset needs at least one split directory")
        cases = [c for d in split_dirs for c in case_dirs(Path(d))]
        if not cases:
            raise DataError(f"no case folders in {[str(d) for d in split_dirs]}")
        train = all(Path(d).name == "train" for d in split_dirs)
        return CaseDataset(cases, self._settings(), train=train, seed=cfg.base.seed)

    def train_batch_size(self) -> int:
        """``model.segmentation.batch_size``: a handful of volumes, not ``train.batch_size``."""
        return self._settings().batch_size

    def baseline_epochs(self, epochs: int) -> int:
        """``model.segmentation.baseline_epochs``: the shared default (10) under-trains a U-Net
        against FedAvg's 8 x 2 local epochs, which made the comparison about budgets."""
        return self._settings().baseline_epochs

    def dp_batch_size(self) -> int:
        return self._settings().dp_batch_size

    def dp_lr(self) -> float:
        return self._settings().dp_lr

    def dp_max_grad_norm(self) -> float:
        return self._settings().dp_max_grad_norm

    def dp_trainable(self) -> tuple[str, ...] | None:
        return self._settings().dp_trainable

    def public_state(self) -> dict[str, torch.Tensor]:
        """The UNet pretrained on the public scan archive (:mod:`.public`), built once, cached."""
        from privfed.tasks.segmentation.public import public_model

        return public_model(self).state

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        from privfed.tasks.segmentation.model import build_unet

        return build_unet(self._settings())

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        image, label = batch
        if len(image) == 0:
            # DP-SGD's Poisson sampling can draw an empty batch, and instance norm cannot run
            # on one. A zero-weighted all-zero case keeps the step (Opacus still adds its
            # noise and counts it) while contributing exactly zero gradient.
            image = image.new_zeros((1, *image.shape[1:]))
            label = label.new_zeros((1, *label.shape[1:]))
            return _loss_fn()(model(image), label) * 0.0
        return _loss_fn()(model(image), label)

    @torch.no_grad()
    def predict(
        self, model: nn.Module, image: torch.Tensor, settings: SegmentationModelSection
    ) -> torch.Tensor:
        """Logits ``[B, 4, ...]`` by sliding a ``roi_size`` window (Gaussian-weighted blend)."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(
            image,
            roi_size=(settings.roi_size,) * 3,
            sw_batch_size=4,
            predictor=model,
            overlap=settings.sw_overlap,
            mode="gaussian",
        )

    def example_losses(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> np.ndarray:
        """DiceCE of each whole case under the sliding window, as :meth:`evaluate` scores it.

        A training split's dataset yields random augmented crops; the audit must compare
        members and non-members under the same view, so their cases are reloaded without the
        random transforms (a ``Subset`` of a :class:`CaseDataset` keeps its order).
        """
        from torch.utils.data import Subset

        from privfed.tasks.segmentation.transforms import CaseDataset

        base, index = dataset, None
        if isinstance(dataset, Subset):
            base, index = dataset.dataset, list(dataset.indices)
        if isinstance(base, CaseDataset):
            cases = base.case_dirs if index is None else [base.case_dirs[i] for i in index]
            dataset = CaseDataset(cases, base.settings, train=False)
        settings = getattr(base, "settings", None) or self._settings()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loss_fn = _loss_fn()
        losses = np.empty(len(dataset), dtype=np.float64)
        try:
            for i, (image, label) in enumerate(DataLoader(dataset, batch_size=1)):
                logits = self.predict(model, image.to(device), settings)
                losses[i] = float(loss_fn(logits, label.to(device)))
        finally:
            model.train(was_training)
        return losses

    def report_figures(
        self, model: nn.Module, dataset: Dataset, out_dir: Path, *, label: str = ""
    ) -> list[Path]:
        """Two cases: an axial slice through the tumour per modality, truth vs prediction."""
        from privfed.tasks.segmentation.figures import write_case_figures
        from privfed.tasks.segmentation.transforms import CaseDataset

        if not isinstance(dataset, CaseDataset):
            raise TypeError(f"report_figures needs a CaseDataset, got {type(dataset).__name__}")
        if dataset.train:  # whole volumes, no random crop or augmentation
            dataset = CaseDataset(dataset.case_dirs, dataset.settings, train=False)
        return write_case_figures(self, model, dataset, Path(out_dir), cases=2, label=label)

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        """Mean per-case Dice/HD95 (mm) on TC, WT, ET, their means, and the DiceCE loss."""
        from privfed.tasks.segmentation.metrics import REGIONS, region_scores

        settings = getattr(dataset, "settings", None) or self._settings()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loss_fn = _loss_fn()
        scores: dict[str, list[np.ndarray]] = {}
        losses: list[float] = []
        try:
            for image, label in DataLoader(dataset, batch_size=max(1, min(batch_size, 2))):
                image, label = image.to(device), label.to(device)
                logits = self.predict(model, image, settings)
                for i in range(len(image)):
                    losses.append(float(loss_fn(logits[i : i + 1], label[i : i + 1])))
                pred = logits.argmax(dim=1, keepdim=True)
                for key, values in region_scores(
                    pred, label, spacing_mm=settings.spacing_mm
                ).items():
                    scores.setdefault(key, []).append(values)
        finally:
            model.train(was_training)
        out: dict[str, float] = {"loss": float(np.mean(losses)) if losses else float("nan")}
        for key, parts in scores.items():
            out[key] = float(np.concatenate(parts).mean())
        for metric in ("dice", "hd95"):
            values = [out[f"{metric}_{r}"] for r in REGIONS if f"{metric}_{r}" in out]
            out[f"{metric}_mean"] = float(np.mean(values)) if values else float("nan")
        out["n"] = len(losses)
        return out
