"""Bad input: one clear message naming the bad value, non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("base.task", "radiology", "unknown task 'radiology'"),
        ("train_federated.rounds", -2, "train_federated.rounds"),
        ("base.profile", "huge", "base.profile='huge'"),
    ],
)
def test_bad_params_fail_clearly(project: Path, key: str, value: object, needle: str) -> None:
    set_params(
        project, {key: value, "base.profile": "default"} if key != "base.profile" else {key: value}
    )
    result = run(["privfed", "generate_data"], project, project_env(), timeout=120)
    assert result.returncode == 1
    assert needle in result.stderr
    assert not (project / "data/raw").exists()


def test_missing_partition_is_named(project: Path) -> None:
    result = run(
        ["privfed", "train_centralized", "--in", "partitions=data/nowhere"],
        project,
        project_env(),
        timeout=120,
    )
    assert result.returncode == 1
    assert "missing partition directory: data/nowhere" in result.stderr
    assert not (project / "models/centralized").exists()


def test_corrupt_parquet_is_named(project: Path) -> None:
    raw = project / "data/raw"
    raw.mkdir(parents=True)
    (raw / "patients.parquet").write_bytes(b"PAR1 this is not parquet")
    (raw / "timeseries.parquet").write_bytes(b"garbage")
    result = run(["privfed", "validate_data"], project, project_env(), timeout=120)
    assert result.returncode == 1
    assert "cannot read Parquet file data/raw/patients.parquet" in result.stderr
    assert not (project / "reports/validation/report.json").exists()
