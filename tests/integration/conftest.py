"""Fixtures that run real processes: a project copy under DVC and a real MLflow server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from privfed.config import config_from_dict
from privfed.federated.launcher import free_port
from tests.conftest import PARAMS, ROOT, partition, raw_params

BIN = Path(sys.executable).parent


def project_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
        **extra,
    }


def set_params(project: Path, updates: dict[str, object]) -> None:
    """Set dotted keys (e.g. 'profiles.tiny.register_model.min_ratio_to_central') in params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git+DVC copy of the tracked project files with base.profile=tiny."""
    dst = tmp_path / "project"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/")) or rel == "dvc.lock":
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PARAMS if rel == "params.yaml" else ROOT / rel, dst / rel)
    set_params(dst, {"base.profile": "tiny"})
    env = project_env()
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dst, env=env, check=True)
    # dvc.yaml's stages call .venv/bin/privfed: the environment running these tests (not in git)
    (dst / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    return dst


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` process on 127.0.0.1 (SQLite store, proxied artifacts)."""
    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    log = open(store / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # MLflow 3's job runner (a huey consumer pool, ~8 extra Python processes) serves only
        # server-side GenAI jobs, which PrivFed never submits; without it the server starts in
        # half the time and CPU. Tracking, artifacts and the registry are the same server code.
        env=project_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                "mlflow server did not start:\n" + (store / "server.log").read_text()[-3000:]
            )
        time.sleep(0.5)
    try:
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.fixture
def partitions(tiny_raw: Path, tmp_path: Path) -> Path:
    """The tiny data validated and partitioned: one folder per hospital."""
    return partition(config_from_dict(raw_params()), tiny_raw, tmp_path)
