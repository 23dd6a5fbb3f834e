"""Task ``readmission``: multimodal longitudinal 30-day readmission risk (Low/Medium/High)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from privfed.ingest import check_site_sizes, concat_sites, site_tables
from privfed.io import DataError, read_parquet, write_parquet
from privfed.metrics import classification_metrics, confusion_counts
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.readmission import schema
from privfed.tasks.readmission.features import featurize, to_dataset
from privfed.tasks.readmission.generate import generate_cohorts, profiles_as_dicts
from privfed.tasks.readmission.model import ReadmissionNet

if TYPE_CHECKING:
    pass

__all__ = ["ReadmissionTask"]

PATIENTS_FILE = "patients.parquet"
TIMESERIES_FILE = "timeseries.parquet"


class ReadmissionTask(Task):
    name = "readmission"
    primary_metric = "macro_auroc"
    higher_is_better = True

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        g = cfg.generate_data
        patients, ts, profiles = generate_cohorts(
            cfg.base.hospitals,
            seed=cfg.base.seed,
            patients_per_hospital=g.patients_per_hospital,
            min_months=g.min_months,
            max_months=g.max_months,
            n_genes=g.n_genes,
            label_noise=g.label_noise,
        )
        write_parquet(patients, out_dir / PATIENTS_FILE)
        write_parquet(ts, out_dir / TIMESERIES_FILE)
        return {
            "task": self.name,
            "schema_version": schema.SCHEMA_VERSION,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            "site_column": "hospital",
            "n_genes": g.n_genes,
            "counts": {
                "patients": patients.groupby("hospital").size().to_dict(),
                "timeseries_rows": ts.groupby("hospital").size().to_dict(),
                "labels": {
                    h: grp["readmission_risk"].value_counts().to_dict()
                    for h, grp in patients.groupby("hospital")
                },
            },
            "files": [PATIENTS_FILE, TIMESERIES_FILE],
            "hospital_profiles": profiles_as_dicts(profiles),
        }

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """``patients`` and ``timeseries`` (CSV or Parquet) per hospital or with a site column.

        Values are cast to the raw layout's types here; what they must satisfy is checked by
        validation (the expectation suite).
        """
        cfg = self.cfg
        patient_tables = site_tables(source, table="patients", site_column=site_column)
        ts_tables = site_tables(source, table="timeseries", site_column=site_column)
        for t in patient_tables:
            missing = [c for c in schema.PATIENT_COLUMNS if c not in {*t.frame.columns, "hospital"}]
            if missing:
                raise DataError(f"{t.file}: missing column(s) {missing}")
        check_site_sizes(patient_tables, minimum=cfg.ingest_data.min_rows_per_site)
        patients = concat_sites(patient_tables)
        ts = concat_sites(ts_tables)
        patients["patient_id"] = patients["patient_id"].astype(str)
        patients["age"] = patients["age"].astype("float64")
        ts["patient_id"] = ts["patient_id"].astype(str)
        genes = sorted(c for c in patients.columns if c.startswith("gene_"))
        patients = patients[[c for c in schema.PATIENT_COLUMNS] + genes]
        ts = ts[list(schema.TIMESERIES_COLUMNS)]
        write_parquet(patients, out_dir / PATIENTS_FILE)
        write_parquet(ts, out_dir / TIMESERIES_FILE)
        hospitals = [t.hospital for t in patient_tables]
        return {
            "task": self.name,
            "schema_version": schema.SCHEMA_VERSION,
            "hospitals": hospitals,
            "sources": {t.hospital: str(t.file) for t in patient_tables},
            "n_genes": len(genes),
            "counts": {"patients": patients.groupby("hospital").size().to_dict()},
            "files": [PATIENTS_FILE, TIMESERIES_FILE],
        }

    def _tables(self, raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        return read_parquet(raw_dir / PATIENTS_FILE), read_parquet(raw_dir / TIMESERIES_FILE)

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        cfg = self.cfg
        patients, ts = self._tables(raw_dir)
        manifest_path = raw_dir / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        from privfed.tasks.readmission import checks  # GX is slow to import; only here

        return checks.table_checks(
            cfg,
            patients,
            ts,
            n_genes=manifest.get("n_genes", cfg.generate_data.n_genes),
            hospitals=manifest.get("hospitals", cfg.base.hospitals),
        )

    def units(self, raw_dir: Path) -> pd.DataFrame:
        patients = read_parquet(raw_dir / PATIENTS_FILE)
        return pd.DataFrame(
            {
                "unit_id": patients["patient_id"],
                "hospital": patients["hospital"],
                "label": patients["readmission_risk"],
            }
        )

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        patients, ts = self._tables(raw_dir)
        keep = set(unit_ids)
        write_parquet(patients[patients["patient_id"].isin(keep)], out_dir / PATIENTS_FILE)
        write_parquet(ts[ts["patient_id"].isin(keep)], out_dir / TIMESERIES_FILE)

    def load_dataset(self, split_dirs: Sequence[Path]) -> TensorDataset:
        cfg = self.cfg
        if not split_dirs:
            raise ValueError("load_dataset needs at least one split directory")
        tables = [self._tables(Path(d)) for d in split_dirs]
        patients = pd.concat([p for p, _ in tables], ignore_index=True)
        ts = pd.concat([t for _, t in tables], ignore_index=True)
        features = featurize(
            patients, ts, seq_days=cfg.model.seq_days, seq_weeks=cfg.model.seq_weeks
        )
        return to_dataset(features)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        # fixed reference scaling (schema.VARIABLE_RANGES): no data statistics needed
        return ReadmissionNet(
            n_vitals=len(schema.VITALS),
            n_labs=len(schema.LABS),
            n_static=2 + len(schema.COMORBIDITIES) + len(schema.MEDICATIONS),
            n_genes=self.cfg.generate_data.n_genes,
            hidden=self.cfg.model.hidden,
            dropout=self.cfg.model.dropout,
            n_classes=len(schema.LABELS),
        )

    def dp_batch_size(self) -> int:
        return self.cfg.model.dp_batch_size

    def dp_lr(self) -> float:
        return self.cfg.model.dp_lr

    def dp_max_grad_norm(self) -> float:
        return self.cfg.model.dp_max_grad_norm

    def public_state(self) -> dict[str, torch.Tensor]:
        """The model pretrained on the public registry (:mod:`.public`), built once, cached."""
        from privfed.tasks.readmission.public import public_model

        return public_model(self).state

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        *inputs, labels = batch
        return nn.functional.cross_entropy(model(*inputs), labels)

    @torch.no_grad()
    def _predict(
        self, model: nn.Module, dataset: Dataset, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Class probabilities, true labels and mean cross-entropy over ``dataset``."""
        model.eval()
        device = next(model.parameters()).device
        probs, labels, total = [], [], 0.0
        for batch in DataLoader(dataset, batch_size=batch_size):
            *inputs, y = (t.to(device) for t in batch)
            logits = model(*inputs)
            total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            probs.append(torch.softmax(logits, dim=-1).cpu().numpy())
            labels.append(y.cpu().numpy())
        y_all = np.concatenate(labels)
        return np.concatenate(probs), y_all, total / max(len(y_all), 1)

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        probs, labels, loss = self._predict(model, dataset, batch_size)
        return classification_metrics(labels, probs, loss)

    def confusion_matrix(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, Any]:
        probs, labels, _ = self._predict(model, dataset, batch_size)
        return confusion_counts(labels, probs.argmax(axis=1), list(schema.LABELS))
