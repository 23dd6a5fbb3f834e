"""ingest_data: a user's folders or site-column file in, the raw layout out; bad data named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from privfed.cli import main
from privfed.config import config_from_dict
from privfed.examples import breast_cancer_sites
from privfed.ingest import site_tables
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
    schema = infer_schema(frame, target="diagnosis", exclude=("site",))
    schema["features"]["grade"]["categories"] = ["G1"]
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    last_site = frame["site"].iloc[-1]
    # Execute / Assert
    with pytest.raises(DataError) as err:
        _ingest(_cfg(source, schema), tmp_path)
    assert str(source) in str(err.value)
    assert (
        f"site {last_site!r} ({source}): column 'grade' has value(s) ['G9'] (1 row) "
        "outside the schema's categories ['G1']"
    ) in str(err.value)
    assert str(err.value).count("column 'grade'") == 1  # the other sites' G1 rows are valid


def test_site_with_too_few_rows_names_file_site_and_count(table, schema, tmp_path: Path) -> None:
    frame = pd.concat([table, table.iloc[:3].assign(site="site_tiny")])
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(DataError, match=rf"{source}: site 'site_tiny' has 3"):
        _ingest(_cfg(source, schema, min_rows_per_site=20), tmp_path)


def test_value_out_of_schema_range_names_file_column_and_value(
    table, schema, tmp_path: Path
) -> None:
    frame = table.copy()
    frame.loc[frame.index[frame["site"] == "site_b"][0], "mean_radius"] = 999.0
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(
        DataError,
        match=rf"site 'site_b' \({source}\): column 'mean_radius' has value\(s\) \['999\.0'\] "
        r"\(1 row\) outside the schema's range",
    ):
        _ingest(_cfg(source, schema), tmp_path)


def test_infinite_or_text_numbers_are_refused(table, schema, tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    for bad in ("inf", "n/a?"):
        frame = table.astype({"mean_texture": object})
        frame.loc[frame.index[0], "mean_texture"] = bad
        frame.to_csv(source, index=False)
        with pytest.raises(DataError, match=r"column 'mean_texture' must hold finite numbers"):
            _ingest(_cfg(source, schema), tmp_path)


def test_question_mark_in_a_numeric_column_names_site_values_and_rows(
    table, schema, tmp_path: Path
) -> None:
    # Prepare: site_b writes '?' for three unknown textures, site_c one 'unk'
    frame = table.astype({"mean_texture": object})
    site_b = frame.index[frame["site"] == "site_b"][:3]
    frame.loc[site_b, "mean_texture"] = "?"
    frame.loc[frame.index[frame["site"] == "site_c"][0], "mean_texture"] = "unk"
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    # Execute
    with pytest.raises(DataError) as err:
        _ingest(_cfg(source, schema), tmp_path)
    # Assert: each site named with its own values and row count, site_a not blamed
    message = str(err.value)
    assert message.startswith("2 problem(s)")
    assert (
        f"site 'site_b' ({source}): column 'mean_texture' must hold finite numbers but has "
        "value(s) ['?'] (3 rows)"
    ) in message
    assert "site 'site_c'" in message and "['unk'] (1 row)" in message
    assert "site_a" not in message


def test_boolean_spelled_differently_per_site_is_read_as_the_schema_spells_it(
    table, tmp_path: Path
) -> None:
    # Prepare: one yes/no column, 0/1 at site_a, True/False at site_b, yes/NO at site_c
    flags = table.groupby("site").cumcount() % 2 == 0
    spelled = {"site_a": ("1", "0"), "site_b": ("True", "False"), "site_c": ("yes", "NO")}
    smoker = [spelled[s][0 if f else 1] for s, f in zip(table["site"], flags, strict=True)]
    frame = table.assign(smoker=smoker)
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    schema = infer_schema(frame, target="diagnosis", exclude=("site",))
    # Execute
    raw = _ingest(_cfg(source, schema), tmp_path)
    # Assert: the draft calls it boolean; ingest stores every spelling as the schema's
    assert schema["features"]["smoker"]["categories"] == ["false", "true"]
    out = read_parquet(raw / "table.parquet")
    expected = frame.assign(smoker=["true" if f else "false" for f in flags])
    expected = expected.sort_values("site", kind="stable")  # ingest orders rows by site
    assert out["smoker"].tolist() == expected["smoker"].tolist()


def test_value_that_is_not_a_boolean_names_its_site_not_the_others(table, tmp_path: Path) -> None:
    # Prepare: a true/false column where site_b also wrote 'unknown' in 4 rows
    frame = table.assign(smoker=["True", "False"] * (len(table) // 2) + ["True"] * (len(table) % 2))
    frame.loc[frame.index[frame["site"] == "site_b"][:4], "smoker"] = "unknown"
    schema = infer_schema(frame, target="diagnosis", exclude=("site", "smoker"))
    schema["features"]["smoker"] = {"type": "categorical", "categories": ["false", "true"]}
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    # Execute
    with pytest.raises(DataError) as err:
        _ingest(_cfg(source, schema), tmp_path)
    # Assert
    assert str(err.value) == (
        "1 problem(s) with values the schema does not allow:\n"
        f"  site 'site_b' ({source}): column 'smoker' has value(s) ['unknown'] (4 rows) "
        "outside the schema's categories ['false', 'true']"
    )


def test_schema_records_the_site_column_and_ingest_reads_it(table, tmp_path: Path) -> None:
    # Prepare: a multi-centre export whose site column is 'centre', drafted with the CLI
    source = tmp_path / "export.csv"
    table.rename(columns={"site": "centre"}).to_csv(source, index=False)
    drafted = tmp_path / "schema.yaml"
    args = ["schema", "infer", "--data", str(source), "--target", "diagnosis"]
    # Execute: without the flag the error says which flag to pass
    assert main([*args, "--out", str(drafted)]) == 1
    assert not drafted.exists()
    assert main([*args, "--site-column", "centre", "--out", str(drafted)]) == 0
    schema = yaml.safe_load(drafted.read_text())
    raw = _ingest(_cfg(source, schema), tmp_path)  # ingest_data.site_column left unset
    # Assert
    assert schema["site_column"] == "centre"
    assert "centre" not in schema["features"]
    out = read_parquet(raw / "table.parquet")
    assert sorted(out["hospital"].unique()) == ["site_a", "site_b", "site_c"]
    # the same column named twice is fine; two different names stop ingest naming both
    _ingest(_cfg(source, schema, site_column="centre"), tmp_path / "again")
    with pytest.raises(
        DataError, match="site_column is 'centre' but ingest_data.site_column is 'site'"
    ):
        _ingest(_cfg(source, schema, site_column="site"), tmp_path / "clash")


def test_drafted_schema_flags_a_likely_missing_value_code(table, tmp_path: Path) -> None:
    # Prepare: site_c writes 0 for every area it did not measure (half its rows)
    frame = table.copy()
    rows = frame.index[frame["site"] == "site_c"]
    frame.loc[rows[: len(rows) // 2], "mean_area"] = 0.0
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    drafted = tmp_path / "schema.yaml"
    # Execute
    code = main(["schema", "infer", "--data", str(source), "--target", "diagnosis",
                 "--out", str(drafted)])  # fmt: skip
    # Assert: a comment in the draft names the column, the value and the site
    assert code == 0
    checks = [line for line in drafted.read_text().splitlines() if line.startswith("# CHECK:")]
    assert len(checks) == 1
    assert checks[0].startswith("# CHECK: column 'mean_area': value 0 fills 50% of the rows at "
                                "site 'site_c' (62 of 125) but 0.0% elsewhere")  # fmt: skip


def test_missing_site_column_says_where_to_name_it(table, schema, tmp_path: Path, capsys) -> None:
    source = tmp_path / "export.csv"
    table.rename(columns={"site": "centre"}).to_csv(source, index=False)
    with pytest.raises(
        DataError, match=r"site column 'site' not found .*set site_column in the schema"
    ):
        _ingest(_cfg(source, schema), tmp_path)
    code = main(["schema", "infer", "--data", str(source), "--target", "diagnosis",
                 "--out", str(tmp_path / "s.yaml")])  # fmt: skip
    assert code == 1
    assert "pass --site-column (the column naming" in " ".join(capsys.readouterr().err.split())


def test_integer_coded_categories_with_gaps_and_shared_row_ids(table, tmp_path: Path) -> None:
    # Prepare: a 1/2/3 grade column with a gap (pandas reads it as 1.0/2.0/NaN), and per-site
    # exports that both number their rows from 1
    frame = table.assign(grade=[1, 2, 3] * (len(table) // 3) + [1] * (len(table) % 3))
    frame["grade"] = frame["grade"].astype("float64")
    frame.loc[frame.index[0], "grade"] = None
    frame["row"] = frame.groupby("site").cumcount() + 1
    source = tmp_path / "export.csv"
    frame.to_csv(source, index=False)
    schema = infer_schema(frame, target="diagnosis", exclude=("site",), id_column="row")
    # the draft calls grade numeric; the user's review says it is a coded category
    schema["features"]["grade"] = {
        "type": "categorical",
        "categories": ["1", "2", "3"],
        "missing": "impute",
    }
    # Execute
    raw = _ingest(_cfg(source, schema), tmp_path)
    # Assert
    out = read_parquet(raw / "table.parquet")
    assert out["unit_id"].is_unique
    assert set(out["grade"].dropna()) == {"1", "2", "3"}
    assert out["grade"].isna().sum() == 1
    assert {"site_a-1", "site_b-1", "site_c-1"} <= set(out["unit_id"])
    # a site repeating an id is named with the value and its rows
    frame.loc[frame.index[frame["site"] == "site_b"][1], "row"] = 1
    frame.to_csv(source, index=False)
    with pytest.raises(
        DataError, match=r"site 'site_b' .*: id column 'row' repeats value\(s\) \['1'\] \(1 row\)"
    ):
        _ingest(_cfg(source, schema), tmp_path / "repeated")


def test_folder_with_both_layouts_is_refused(table, tmp_path: Path) -> None:
    (tmp_path / "src" / "site_a").mkdir(parents=True)
    table.to_csv(tmp_path / "src" / "all.csv", index=False)
    with pytest.raises(DataError, match="both hospital folders"):
        site_tables(tmp_path / "src", table=None, site_column="site")


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


def test_training_refuses_data_ingested_with_another_schema(table, schema, tmp_path: Path) -> None:
    """An edited schema file that DVC did not see cannot silently mismatch the data."""
    from privfed.tasks import get_task

    source = tmp_path / "export.csv"
    table.to_csv(source, index=False)
    raw = _ingest(_cfg(source, schema), tmp_path)
    edited = {
        **schema,
        "features": {k: v for k, v in schema["features"].items() if k != "mean_area"},
    }
    cfg = _cfg(source, edited)
    with pytest.raises(DataError, match="differs from the one .* was ingested with"):
        get_task("tabular", cfg).load_dataset([raw])


def test_validation_names_the_site_values_and_rows(table, schema, tmp_path: Path) -> None:
    """Values that reach validate_data (ingest missed them, or the table was edited) are
    reported per hospital, with the distinct values and how many rows hold them."""
    # Prepare: an ingested table whose site_b rows then get two unknown diagnoses
    source = tmp_path / "export.csv"
    table.to_csv(source, index=False)
    cfg = _cfg(source, schema)
    raw = _ingest(cfg, tmp_path)
    ingested = read_parquet(raw / "table.parquet")
    at_b = ingested.index[ingested["hospital"] == "site_b"][:2]
    ingested.loc[at_b, "diagnosis"] = "unknown"
    ingested.to_parquet(raw / "table.parquet", index=False)
    # Execute
    with pytest.raises(validate_data.ValidationFailed) as err:
        validate_data.run(cfg, {"raw": raw}, {"report": tmp_path / "v"})
    # Assert
    assert str(err.value).splitlines()[1:] == [
        "  - table table[hospital=site_b]: expect_column_values_to_be_in_set on diagnosis: "
        "observed 2 unexpected row(s), e.g. value(s) ['unknown']"
    ]
