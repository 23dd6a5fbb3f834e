"""A red-team hospital in a real federation: its update is screened out, the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs
from privfed.stages import run_data_stages
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def test_sign_flipping_supernode_is_rejected_every_round(tmp_path: Path) -> None:
    # Prepare: five hospitals (tiny profile); hospital_5's SuperNode sends sign-flipped updates
    cfg = config_from_dict(
        raw_params(
            base={"num_hospitals": 5},
            train_federated={"rounds": 2, "startup_timeout_s": 90},
            privacy={"enabled": False},
            register_model={"candidate": "federated"},
        )
    )
    hospitals = hospital_dirs(run_data_stages(cfg, tmp_path / "data"))
    attacks = {"hospital_5": "sign_flip"}
    # Execute
    with LocalFederation(cfg, hospitals, tmp_path / "fed", attacks=attacks) as federation:
        result = federation.run(RunSpec(name="attacked", out_dir=tmp_path / "out", dp=False))
        attacker_log = (federation.log_dir / "executor-hospital_5.log").read_text()
    # Assert: every round completed, and each left the attacker's update out, saying why
    assert result["rounds_completed"] == 2
    for row in result["rounds"][1:]:
        assert set(row["rejected"]) == {"hospital_5"}
        assert "more than 10 x the median" in row["rejected"]["hospital_5"]
        assert set(row["train"]) == {f"hospital_{i}" for i in range(1, 6)}
    assert "attack=sign_flip" in attacker_log
