"""SCAFFOLD in a real federation: c travels beside the weights, every round completes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs
from privfed.stages import run_data_stages
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def test_scaffold_runs_through_real_supernodes(tmp_path: Path) -> None:
    # Prepare: three hospitals (tiny profile), SCAFFOLD, screening on
    cfg = config_from_dict(
        raw_params(
            train_federated={"strategy": "scaffold", "rounds": 2, "startup_timeout_s": 90},
            privacy={"enabled": False},
            register_model={"candidate": "federated"},
        )
    )
    hospitals = hospital_dirs(run_data_stages(cfg, tmp_path / "data"))
    # Execute
    with LocalFederation(cfg, hospitals, tmp_path / "fed") as federation:
        result = federation.run(RunSpec(name="scaffold", out_dir=tmp_path / "out", dp=False))
    # Assert: both rounds, every hospital's update accepted (the control variates beside the
    # weights trip neither Flower's reply checks nor PrivFed's screening)
    assert result["strategy"] == "scaffold"
    assert result["rounds_completed"] == 2
    for row in result["rounds"][1:]:
        assert row["rejected"] == {} and row["failed"] == {}
        assert set(row["train"]) == {"hospital_1", "hospital_2", "hospital_3"}
        assert math.isfinite(row["train_loss"])
    assert (tmp_path / "out" / "model.pt").is_file()
