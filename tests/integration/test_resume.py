"""The whole federated stage is killed mid-run; rerunning it goes on from the last round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.integration.conftest import project_env, set_params

pytestmark = pytest.mark.integration

ROUNDS = 3
STATE = Path("models/federated-resume/federated_dp/state.pt")


def _saved_round(path: Path) -> int:
    """The round of the resume file (0 while there is none); it is replaced atomically."""
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["round"])


def _kill_after_round(
    cmd: list[str], cwd: Path, state: Path, env: dict[str, str], timeout: float = 600
) -> dict:
    """Run ``cmd``; SIGKILL its process group once ``state`` holds round 1; return that state."""
    log = open(cwd / "first-attempt.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while _saved_round(state) < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "stage ended (or timed out) before the DP run's round 1:\n"
                    + (cwd / "first-attempt.log").read_text()[-3000:]
                )
            time.sleep(0.05)
        flower = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        log.close()
    # nothing of the killed stage lives on: its SuperLink and SuperNodes die with it
    _, alive = psutil.wait_procs(flower, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    return torch.load(state, map_location="cpu", weights_only=True)


def test_killed_stage_resumes_from_last_round(project: Path) -> None:
    # Prepare: three rounds per run (the tiny profile has two), DP on
    set_params(project, {"profiles.tiny.train_federated.rounds": ROUNDS})
    cmd = ["dvc", "repro", "train_federated"]
    tmp = project / "tmp"  # the stages' temporary folders (TLS and SuperNode keys among them)
    tmp.mkdir()
    env = project_env(TMPDIR=str(tmp))
    # Execute: kill dvc and the stage (process group, SIGKILL) once the DP run saved round 1
    killed = _kill_after_round(cmd, project, project / STATE, env)
    steps_round_1 = {
        h: sum(n for *_, n in hist) for h, hist in json.loads(killed["dp_history"]).items()
    }
    assert not (project / "models/federated").exists()  # nothing published by the killed stage
    # ... but its debris is there: the keys' folder and the half-written output folder
    assert [p for p in tmp.glob("privfed-federation-*") if (p / "keys").is_dir()]
    assert list((project / "models").glob(".federated.*"))
    rerun = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    # Assert: the rerun completed, said it resumed, and trained only the rounds left
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert f"resuming from the checkpoint of round 1 of {ROUNDS}" in output
    assert f"resuming from the checkpoint of round {ROUNDS} of {ROUNDS}" in output  # no-DP run
    metrics = json.loads((project / "metrics/train_federated.json").read_text())
    for name, resumed in (("federated", ROUNDS), ("federated_dp", 1)):
        run = metrics["runs"][name]
        assert run["resumed_from_round"] == resumed
        assert run["rounds_completed"] == ROUNDS
        assert [r["round"] for r in run["rounds"]] == list(range(ROUNDS + 1))
    # every DP-SGD step is counted once: each hospital's history covers all rounds, no more
    result = json.loads((project / "models/federated/federated_dp/run.json").read_text())
    for hospital, history in result["dp_history"].items():
        assert sum(n for *_, n in history) == ROUNDS * steps_round_1[hospital], hospital
    # the resumed rounds trained at every hospital, and the resume state is gone
    assert all(result["rounds"][r]["train"] for r in range(2, ROUNDS + 1))
    assert not (project / "models/federated-resume").exists()
    # every round's checkpoint is published, those trained before the kill too
    for name in ("federated", "federated_dp"):
        kept = sorted(p.name for p in (project / "models/federated" / name).glob("checkpoints/*"))
        assert kept == [f"round_{r:03d}.pt" for r in range(1, ROUNDS + 1)], (name, kept)
    # the rerun removed what the killed stage left: no keys, no half-written output
    assert not list(tmp.glob("privfed-federation-*"))
    assert not list((project / "models").glob(".federated.*"))
