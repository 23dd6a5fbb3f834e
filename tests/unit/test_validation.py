from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from privfed.stages import validate_data
from privfed.stages.validate_data import ValidationFailed


def _copy(raw: Path, tmp: Path) -> Path:
    dst = tmp / "raw"
    shutil.copytree(raw, dst)
    return dst


def test_clean_data_passes_and_writes_docs(tiny_cfg, tiny_raw, tmp_path) -> None:
    report = validate_data.run(tiny_cfg, {"raw": tiny_raw}, {"report": tmp_path / "v"})
    assert report["success"] is True
    assert (tmp_path / "v" / "data_docs" / "index.html").is_file()
    assert json.loads((tmp_path / "v" / "report.json").read_text())["success"] is True


def test_corrupted_patients_table_is_caught(tiny_cfg, tiny_raw, tmp_path) -> None:
    raw = _copy(tiny_raw, tmp_path)
    patients = pd.read_parquet(raw / "patients.parquet")
    patients.loc[3, "age"] = 180.0
    patients.loc[5, "readmission_risk"] = "Extreme"
    patients.to_parquet(raw / "patients.parquet", index=False)
    with pytest.raises(ValidationFailed) as err:
        validate_data.run(tiny_cfg, {"raw": raw}, {"report": tmp_path / "v"})
    message = str(err.value)
    assert "expect_column_values_to_be_between on age" in message
    assert "expect_column_values_to_be_in_set on readmission_risk" in message
    assert "Extreme" in message
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["success"] is False and len(report["failures"]) == 2


def test_unordered_timeseries_and_out_of_range_vital_are_caught(
    tiny_cfg, tiny_raw, tmp_path
) -> None:
    raw = _copy(tiny_raw, tmp_path)
    ts = pd.read_parquet(raw / "timeseries.parquet")
    hr = ts.index[ts["variable"] == "heart_rate"]
    ts.loc[hr[0], "value"] = 900.0
    ts.iloc[[hr[1], hr[2]]] = ts.iloc[[hr[2], hr[1]]].to_numpy()  # swap two days
    ts.to_parquet(raw / "timeseries.parquet", index=False)
    with pytest.raises(ValidationFailed) as err:
        validate_data.run(tiny_cfg, {"raw": raw}, {"report": tmp_path / "v"})
    assert "day_step" in str(err.value)
    assert "on value" in str(err.value) and "900" in str(err.value)


def test_too_few_patients_at_a_hospital(tiny_cfg, tiny_raw, tmp_path) -> None:
    raw = _copy(tiny_raw, tmp_path)
    patients = pd.read_parquet(raw / "patients.parquet")
    keep = patients[(patients["hospital"] != "hospital_2") | (patients.index % 20 == 0)]
    keep.to_parquet(raw / "patients.parquet", index=False)
    ts = pd.read_parquet(raw / "timeseries.parquet")
    ts[ts["patient_id"].isin(keep["patient_id"])].to_parquet(raw / "timeseries.parquet")
    with pytest.raises(ValidationFailed, match=r"hospital=hospital_2.*row_count"):
        validate_data.run(tiny_cfg, {"raw": raw}, {"report": tmp_path / "v"})
