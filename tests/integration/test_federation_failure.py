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


def test_a_run_past_its_timeout_is_reported_and_stopped_on_the_superlink(
    tiny_raw, tmp_path
) -> None:
    """The submitter gives up after ``run_timeout_s`` and the run is stopped on the SuperLink,
    both through Flower's Control API called in this process (no ``flwr`` CLI)."""
    from privfed.federated.flower_control import run_status, stop_run
    from privfed.federated.launcher import LocalFederation, RunSpec

    # Prepare: a run cannot finish within 1 s (start-up and 2 rounds take longer)
    cfg = config_from_dict(raw_params(train_federated={"run_timeout_s": 1.0}))
    parts = partition(cfg, tiny_raw, tmp_path)
    hospitals = sorted(p for p in parts.iterdir() if p.is_dir())
    with LocalFederation(cfg, hospitals, tmp_path / "fed") as federation:
        # Execute
        with pytest.raises(FederationError, match="run_timeout_s=1.0") as err:
            federation.run(RunSpec(name="slow", out_dir=tmp_path / "out", dp=False))
        run_id = err.value.run_id
        before = run_status(run_id, "local", federation._env)
        stop_run(run_id, "local", federation._env)
        after = run_status(run_id, "local", federation._env)
    # Assert: the error named the run Flower started, which was still going until stopped
    assert run_id is not None and run_id.isdigit()
    assert before["run-id"] == run_id and not before["status"].startswith("finished")
    assert after["status"] == "finished:stopped", after
