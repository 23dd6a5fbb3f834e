"""ingest_data: a user's folders or site-column file in, the raw layout out; bad data named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from privfed.cli import main
from privfed.config import config_from_dict
from privfed.examples import breast_cancer_sites
from privfed.io import DataError, read_parquet
from privfed.stages import ingest_data, validate_data
from privfed.tasks.tabular.schema import infer_schema
from tests.conftest import raw_params


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return breast_cancer_sites(seed=1)


@pytest.fixture(scope="module")
def schema(table: pd.DataFrame) -> dict:
    return infer_schema(table, target="diagnosis", exclude=("site",))


def _cfg(source: Path, schema: dict, **ingest):
    return config_from_dict(
        raw_params(
            base={"task": "tabular", "data_source": "directory"},
            ingest_data={"path": str(source), "schema": schema, **ingest},
        )
    )


def _ingest(cfg, tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    ingest_data.run(cfg, {"generated": tmp_path / "unused"}, {"raw": out})
    return out


def test_one_file_and_folder_per_hospital_ingest_the_same(table, schema, tmp_path: Path) -> None:
    # Prepare: the same rows as one CSV with a site column, and as one folder per site
    single = tmp_path / "all.csv"
    table.to_csv(single, index=False)
    folders = tmp_path / "sites"
    for site, rows in table.groupby("site"):
        (folders / site).mkdir(parents=True)
        rows.drop(columns="site").to_parquet(folders / site / "export.parquet")
    # Execute
    a = read_parquet(_ingest(_cfg(single, schema), tmp_path / "a") / "table.parquet")
    b = read_parquet(_ingest(_cfg(folders, schema), tmp_path / "b") / "table.parquet")
    # Assert
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["hospital"].unique()) == ["site_a", "site_b", "site_c"]
    assert len(a) == len(table)


def test_missing_target_column_names_file_and_column(table, schema, tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    table.drop(columns="diagnosis").to_csv(source, index=False)
    with pytest.raises(DataError, match=rf"{source}: missing target column 'diagnosis'"):
        _ingest(_cfg(source, schema), tmp_path)
    assert not (tmp_path / "raw").exists()


def test_category_outside_the_schema_names_file_column_and_value(table, tmp_path: Path) -> None:
    # Prepare: a categorical column whose schema does not know one site's value
    frame = table.assign(grade=["G1"] * (len(table) - 1) + ["G9"])
    schema = infer_schema(frame.iloc[:-1], target="diagnosis", exclude=("site",))
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    # Execute / Assert
    with pytest.raises(DataError) as err:
        _ingest(_cfg(source, schema), tmp_path)
    assert str(source) in str(err.value)
    assert "column 'grade'" in str(err.value)
    assert "['G9']" in str(err.value)


def test_site_with_too_few_rows_names_file_site_and_count(table, schema, tmp_path: Path) -> None:
    frame = pd.concat([table, table.iloc[:3].assign(site="site_tiny")])
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(DataError, match=rf"{source}: site 'site_tiny' has 3"):
        _ingest(_cfg(source, schema, min_rows_per_site=20), tmp_path)


def test_value_out_of_schema_range_fails_validation_naming_hospital_and_column(
    table, schema, tmp_path: Path
) -> None:
    # Prepare: one impossible radius at site_b
    frame = table.copy()
    frame.loc[frame.index[frame["site"] == "site_b"][0], "mean_radius"] = 999.0
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    cfg = _cfg(source, schema)
    raw = _ingest(cfg, tmp_path)
    # Execute / Assert
    with pytest.raises(validate_data.ValidationFailed, match=r"mean_radius.*999\.0"):
        validate_data.run(cfg, {"raw": raw}, {"report": tmp_path / "v"})


def test_readmission_tables_as_csv_folders_ingest_and_validate(
    tiny_cfg, tiny_raw, tmp_path: Path
) -> None:
    # Prepare: the synthetic tables exported per hospital as CSV, the way a site would
    patients = read_parquet(tiny_raw / "patients.parquet")
    ts = read_parquet(tiny_raw / "timeseries.parquet")
    source = tmp_path / "hospitals"
    for hospital, rows in patients.groupby("hospital"):
        (source / hospital).mkdir(parents=True)
        rows.drop(columns="hospital").to_csv(source / hospital / "patients.csv", index=False)
        ts[ts["hospital"] == hospital].to_csv(source / hospital / "timeseries.csv", index=False)
    params = raw_params(base={"data_source": "directory"}, ingest_data={"path": str(source)})
    cfg = config_from_dict(params)
    # Execute
    raw = _ingest(cfg, tmp_path)
    report = validate_data.run(cfg, {"raw": raw}, {"report": tmp_path / "v"})
    # Assert
    assert report["success"] is True
    assert read_parquet(raw / "patients.parquet").shape == patients.shape


def test_cli_reports_bad_data_and_writes_nothing(
    table, schema, tmp_path: Path, monkeypatch, capsys
) -> None:
    # Prepare: a params file pointing at an export whose target column is missing
    source = tmp_path / "export.csv"
    table.drop(columns="diagnosis").to_csv(source, index=False)
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    params = raw_params(
        base={"task": "tabular", "data_source": "directory"},
        ingest_data={"path": str(source), "schema": "schema.yaml"},
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    # Execute
    code = main(["ingest_data"])
    # Assert
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "missing target column 'diagnosis'" in err
    assert not (tmp_path / "data/raw").exists()


def test_schema_file_is_resolved_to_its_contents(schema, tmp_path: Path, monkeypatch) -> None:
    """Pods and Flower apps get the schema itself, never a path they cannot open."""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema))
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(raw_params(ingest_data={"schema": "s.yaml"}))
    assert cfg.ingest_data.schema_["target"]["column"] == "diagnosis"
    assert (
        cfg.model_dump(mode="json")["ingest_data"]["schema"]["target"]["kind"] == "classification"
    )
    with pytest.raises(ValueError, match="schema file not found: 'nope.yaml'"):
        config_from_dict(raw_params(ingest_data={"schema": "nope.yaml"}))
