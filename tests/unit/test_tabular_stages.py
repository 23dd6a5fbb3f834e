"""Task ``tabular`` through the data and baseline stages: synthetic data and a regression table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from privfed.config import config_from_dict
from privfed.examples import breast_cancer_sites
from privfed.io import read_parquet
from privfed.stages import run_data_stages, train_centralized, train_local
from privfed.tasks.tabular.schema import infer_schema
from tests.conftest import raw_params


def _data_stages(cfg, tmp_path: Path) -> Path:
    return run_data_stages(cfg, tmp_path)


def test_synthetic_table_goes_through_the_same_ingest(tmp_path: Path) -> None:
    # Prepare
    cfg = config_from_dict(raw_params(base={"task": "tabular"}))
    # Execute
    _data_stages(cfg, tmp_path)
    # Assert: ingest read generate_data's site-column table; gaps passed as `impute` columns
    manifest = json.loads((tmp_path / "raw/manifest.json").read_text())
    assert manifest["hospitals"] == cfg.base.hospitals
    assert manifest["data_source"] == "synthetic"
    table = read_parquet(tmp_path / "raw/table.parquet")
    assert table["bmi"].isna().any()
    assert set(table["cv_event"]) == {"no", "yes"}


def test_regression_target_trains_with_regression_metrics(tmp_path: Path) -> None:
    # Prepare: predict tumour area from the other measurements
    source = tmp_path / "export.csv"
    frame = breast_cancer_sites(seed=2).drop(columns=["mean_radius", "mean_perimeter"])
    frame.to_csv(source, index=False)
    schema = infer_schema(frame, target="mean_area", exclude=("site",))
    assert schema["target"]["kind"] == "regression"
    cfg = config_from_dict(
        raw_params(
            base={"task": "tabular", "data_source": "directory"},
            ingest_data={"path": str(source), "schema": schema},
            train_centralized={"epochs": 30},
        )
        | {"profiles": {"tiny": {"model": {"hidden": 16}}}}
    )
    partitions = _data_stages(cfg, tmp_path)
    # Execute
    central = train_centralized.run(
        cfg,
        {"partitions": partitions},
        {"model": tmp_path / "c", "metrics": tmp_path / "c.json"},
    )
    local = train_local.run(
        cfg,
        {"partitions": partitions},
        {"models": tmp_path / "l", "metrics": tmp_path / "l.json"},
    )
    # Assert: R² is the primary metric, in the area's own units for MAE/RMSE
    assert central["val"]["r2"] > 0.8
    assert 0 < central["val"]["mae"] < central["val"]["rmse"] < 300
    assert set(local) == {"site_a", "site_b", "site_c"}
    assert all(not math.isnan(m["val"]["r2"]) for m in local.values())
