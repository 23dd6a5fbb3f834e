"""A SuperNode killed mid-run: the run finishes without it; the next run restarts it once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs
from privfed.stages import run_data_stages
from tests.conftest import raw_params

pytestmark = pytest.mark.integration

VICTIM = "hospital_3"
TIMEOUT_S = 12


def _kill_when(checkpoint: Path, pid: int, stop: threading.Event) -> None:
    """SIGKILL ``pid`` as soon as ``checkpoint`` exists: the next round has just begun."""
    while not stop.is_set():
        if checkpoint.exists():
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def test_killed_supernode_is_a_recorded_dropout(tmp_path: Path) -> None:
    # Prepare: three hospitals and the default min_train_nodes (null: all but one); a round
    # waits at most TIMEOUT_S for replies
    raw = raw_params(
        train_federated={"round_timeout_s": TIMEOUT_S, "startup_timeout_s": 90},
        privacy={"enabled": False},
        register_model={"candidate": "federated"},
    )
    raw["profiles"]["tiny"]["train_federated"]["rounds"] = 3  # the tiny profile's 2 is too few
    cfg = config_from_dict(raw)
    hospitals = hospital_dirs(run_data_stages(cfg, tmp_path / "data"))
    out = tmp_path / "out"
    with LocalFederation(cfg, hospitals, tmp_path / "fed") as federation:
        victim = dict(federation.processes.procs)[f"supernode-{VICTIM}"]
        stop = threading.Event()
        killer = threading.Thread(
            target=_kill_when, args=(out / "checkpoints" / "round_001.pt", victim.pid, stop)
        )
        killer.start()
        # Execute: the SuperNode dies by its PID as soon as round 1 is checkpointed
        try:
            result = federation.run(RunSpec(name="dropout", out_dir=out, dp=False))
        finally:
            stop.set()
            killer.join()
        # before the second run on the same federation, the dead SuperNode is restarted once
        again = federation.run(RunSpec(name="after", out_dir=tmp_path / "again", dp=False))
        restarted = federation.restarted
    # Assert: the run completed all rounds
    assert victim.poll() == -signal.SIGKILL
    assert result["rounds_completed"] == 3
    # the dropout is recorded once, with the hospital's name, in a round after round 1
    dropped_in = [r["round"] for r in result["rounds"] if VICTIM in r["dropouts"]]
    assert len(dropped_in) == 1 and dropped_in[0] >= 2, result["rounds"]
    assert result["dropouts"] == {VICTIM: dropped_in[0]}
    assert "round_timeout_s=12" in result["rounds"][dropped_in[0]]["dropouts"][VICTIM]
    # later rounds train without it (it is not sampled again), the others all take part
    others = {h.name for h in hospitals} - {VICTIM}
    for row in result["rounds"][dropped_in[0] + 1 :]:
        assert set(row["train"]) == others
    # the restarted hospital trains again, on a fresh node; the dead one's log is kept
    assert set(restarted) == {VICTIM} and restarted[VICTIM].is_file()
    assert all(set(row["train"]) == others | {VICTIM} for row in again["rounds"][1:])
    assert again["dropouts"] == {}
