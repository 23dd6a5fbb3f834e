"""A failing federated run: clear error, no published model, logs kept, no process left."""

from __future__ import annotations

import psutil
import pytest

from privfed.config import config_from_dict
from privfed.federated.launcher import FederationError
from privfed.stages import train_federated
from tests.conftest import partition, raw_params

pytestmark = pytest.mark.integration


def _our_processes(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


def test_client_failure_fails_the_stage_and_cleans_up(tiny_raw, tmp_path) -> None:
    # Prepare: hospital_2's validation table is corrupt, so its ClientApp raises
    cfg = config_from_dict(raw_params(train_federated={"startup_timeout_s": 60}))
    partition(cfg, tiny_raw, tmp_path)
    (tmp_path / "p" / "hospital_2" / "val" / "patients.parquet").write_bytes(b"not parquet")
    outputs = {"models": tmp_path / "models" / "federated", "metrics": tmp_path / "m.json"}
    # Execute
    with pytest.raises(FederationError) as err:
        train_federated.run(cfg, {"partitions": tmp_path / "p"}, outputs)
    # Assert: the error names the round and the hospital that failed (an error is not a dropout,
    # even though the default min_train_nodes lets a run go on without one hospital)
    assert "finished:failed" in str(err.value)
    assert "round 1: hospital_2 failed:" in str(err.value)
    assert "a hospital that answers with an error stops the run" in str(err.value)
    # nothing DVC or the registry could take as a result
    assert not outputs["models"].exists() and not outputs["metrics"].exists()
    # the failing hospital's log, with the cause, is kept for the user
    kept = tmp_path / "models" / train_federated.FAILED_LOGS
    assert "cannot read Parquet file" in (kept / "executor-hospital_2.log").read_text()
    # no SuperLink, SuperNode or executor of this federation is still running
    assert _our_processes(str(tmp_path)) == []
