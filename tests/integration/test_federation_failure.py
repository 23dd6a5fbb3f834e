"""A failing federated run raises a clear error and leaves no Flower process behind."""

from __future__ import annotations

import shutil

import psutil
import pytest

from privfed.config import config_from_dict
from privfed.federated.launcher import FederationError, LocalFederation, RunSpec
from privfed.stages import partition_data, validate_data
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def test_client_failure_fails_the_run_and_ends_every_process(tiny_raw, tmp_path) -> None:
    # Prepare: hospital_2's validation split is missing, so its ClientApp raises
    cfg = config_from_dict(raw_params(train_federated={"startup_timeout_s": 60}))
    validate_data.run(cfg, {"raw": tiny_raw}, {"report": tmp_path / "v"})
    partition_data.run(
        cfg,
        {"raw": tiny_raw, "validation": tmp_path / "v"},
        {"partitions": tmp_path / "p", "stats": tmp_path / "s.json"},
    )
    shutil.rmtree(tmp_path / "p" / "hospital_2" / "val")
    hospitals = sorted((tmp_path / "p").iterdir())
    federation = LocalFederation(cfg, hospitals, tmp_path / "work")
    # Execute
    with pytest.raises(FederationError) as err, federation:
        pids = [proc.pid for _, proc in federation._procs]
        assert len(pids) == 1 + 2 * len(hospitals)  # SuperLink + SuperNode/executor pairs
        federation.run(RunSpec(name="federated", out_dir=tmp_path / "out", dp=False))
    # Assert: the error says what happened, and nothing is left running
    assert "finished:failed" in str(err.value)
    assert "round 1: only 2 hospital update(s) arrived (hospital_1, hospital_3)" in str(err.value)
    alive = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert not (tmp_path / "out" / "model.pt").exists()
