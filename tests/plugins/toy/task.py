"""The ``toy`` task: every Task method, in as few lines as a real task can have them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from privfed.ingest import check_site_sizes, concat_sites, site_tables
from privfed.io import read_parquet, write_parquet
from privfed.tasks.base import TableCheck, Task

TABLE = "points.parquet"
COLUMNS = ["unit_id", "hospital", "x1", "x2", "label"]


class ToyTask(Task):
    name = "toy"
    primary_metric = "accuracy"

    def generate(self, out_dir: Path) -> dict[str, Any]:
        g = self.cfg.generate_data.toy
        rng = np.random.default_rng(self.cfg.base.seed)
        n = self.cfg.generate_data.patients_per_hospital
        for i, hospital in enumerate(self.cfg.base.hospitals):
            label = rng.integers(0, 2, n)
            x = rng.normal(size=(n, 2)) + np.outer(label, [g.separation, 0.0]) + i * g.site_shift
            frame = pd.DataFrame(
                {"unit_id": [f"{hospital}-{j}" for j in range(n)], "x1": x[:, 0]}
                | {"x2": x[:, 1], "label": label}
            )
            (out_dir / hospital).mkdir(parents=True)
            frame.to_csv(out_dir / hospital / "points.csv", index=False)
        return {"task": self.name, "site_column": "hospital", "counts": {"rows": n}}

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        tables = site_tables(source, table="points", site_column=site_column)
        check_site_sizes(tables, minimum=self.cfg.ingest_data.min_rows_per_site)
        frame = concat_sites(tables)[COLUMNS]
        frame["unit_id"] = frame["unit_id"].astype(str)
        write_parquet(frame, out_dir / TABLE)
        hospitals = [t.hospital for t in tables]
        return {"task": self.name, "hospitals": hospitals, "counts": {"rows": len(frame)}}

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        expectations = [
            gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=True),
            gxe.ExpectColumnValuesToBeUnique(column="unit_id"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        ]
        minimum = self.cfg.validate_data.min_patients_per_hospital
        return [
            TableCheck(
                name="points",
                frame=read_parquet(raw_dir / TABLE),
                expectations=expectations,
                group_column="hospital",
                per_group=[gxe.ExpectTableRowCountToBeBetween(min_value=minimum)],
            )
        ]

    def units(self, raw_dir: Path) -> pd.DataFrame:
        return read_parquet(raw_dir / TABLE)[["unit_id", "hospital", "label"]]

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        frame = read_parquet(raw_dir / TABLE)
        write_parquet(frame[frame["unit_id"].isin(set(unit_ids))], out_dir / TABLE)

    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        frame = pd.concat([read_parquet(Path(d) / TABLE) for d in split_dirs])
        x = torch.tensor(frame[["x1", "x2"]].to_numpy(), dtype=torch.float32)
        return TensorDataset(x, torch.tensor(frame["label"].to_numpy(), dtype=torch.long))

    def train_lr(self) -> float:
        return self.cfg.model.toy.lr

    def dp_batch_size(self) -> int:
        return self.cfg.model.toy.dp_batch_size

    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        torch.manual_seed(self.cfg.base.seed)
        return nn.Linear(2, 2)

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        assert isinstance(dataset, TensorDataset), type(dataset)
        x, y = dataset.tensors
        model.eval()
        with torch.no_grad():
            logits = model(x.to(next(model.parameters()).device)).cpu()
        return {
            "accuracy": float((logits.argmax(1) == y).float().mean()),
            "loss": float(nn.functional.cross_entropy(logits, y)),
            "n": len(y),
        }
