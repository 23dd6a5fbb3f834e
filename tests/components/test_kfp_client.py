"""``privfed pipeline submit|schedule`` against a stand-in KFP API server on 127.0.0.1.

No Kubeflow cluster can run here, so a small HTTP server takes the place of the KFP API server:
it answers the few endpoints the official ``kfp.Client`` calls and records every request, and
the tests assert on what would have reached a real cluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from privfed.cli import main
from tests.conftest import PARAMS, ROOT


class StandInKfpApi(BaseHTTPRequestHandler):
    """Records requests; answers like KFP's v2beta1 REST API for experiments, runs, schedules."""

    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        return

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        entry = {
            "method": self.command,
            "path": self.path,
            "body": body,
            "authorization": self.headers.get("Authorization"),
        }
        self.requests.append(entry)
        return entry

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._record()
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        elif self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        else:
            self._reply({})

    def do_POST(self) -> None:  # noqa: N802
        entry = self._record()
        body = entry["body"] or {}
        if self.path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif self.path == "/apis/v2beta1/runs":
            self._reply({"run_id": "run-1", "experiment_id": "exp-1", "state": "PENDING"})
        elif self.path == "/apis/v2beta1/recurringruns":
            self._reply({"recurring_run_id": "sched-1", "experiment_id": "exp-1"})
        else:
            self.send_error(404)


@pytest.fixture()
def kfp_api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    StandInKfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", StandInKfpApi.requests
    finally:
        server.shutdown()
        server.server_close()


def _cli(action: str, host: str, *extra: str) -> int:
    """``privfed pipeline <action>`` against the stand-in, with this repository's params."""
    return main(
        [
            "pipeline",
            action,
            "--host",
            host,
            "--namespace",
            "privfed",
            "--project",
            str(ROOT),
            "--params",
            str(PARAMS),
            *extra,
        ]
    )


def _spec(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes platform spec) as kfp.Client sends them."""
    both = body["pipeline_spec"]
    return both["pipeline_spec"], both["platform_spec"]


def _posted(requests: list[dict[str, Any]], path: str) -> dict[str, Any]:
    bodies = [r["body"] for r in requests if r["method"] == "POST" and r["path"] == path]
    assert len(bodies) == 1, f"expected one POST {path}, got {requests}"
    return bodies[0]


def test_submit_sends_the_compiled_pipeline_with_overrides(kfp_api, capsys) -> None:
    host, requests = kfp_api
    # Execute
    code = _cli(
        "submit",
        host,
        "--set",
        "train_federated.rounds=20",
        "--set",
        "privacy.target_epsilon=3.0",
        "--name",
        "nightly",
    )
    # Assert
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "run-1"
    experiment = _posted(requests, "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "privfed"
    run = _posted(requests, "/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert not run.get("service_account")  # KFP's default: the Profile SA the manifests bind
    spec, platform = _spec(run)
    assert spec["pipelineInfo"]["name"] == "privfed"
    assert "exit-handler-1" in spec["root"]["dag"]["tasks"]  # the whole DAG travels
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train-federated"]["tolerations"]  # GPU placement travels with it
    params = run["runtime_config"]["parameters"]
    defaults = yaml.safe_load(PARAMS.read_text())
    assert params["train_federated"]["rounds"] == 20
    assert params["train_federated"]["local_epochs"] == defaults["train_federated"]["local_epochs"]
    # params.yaml's null strategy (the task's own) stays absent, for the config to resolve
    assert params["train_federated"].get("strategy") == defaults["train_federated"]["strategy"]
    assert params["privacy"]["target_epsilon"] == 3.0
    assert set(params) == {"train_federated", "privacy"}  # the rest keep compiled defaults


def test_schedule_creates_a_recurring_run_without_overlap_or_catch_up(kfp_api, capsys) -> None:
    host, requests = kfp_api
    code = _cli("schedule", host, "--cron", "0 0 3 * * 1")
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "sched-1"
    job = _posted(requests, "/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert not job.get("service_account")
    assert _spec(job)[0]["pipelineInfo"]["name"] == "privfed"


def test_schedule_from_a_pod_sends_its_projected_token(
    kfp_api, tmp_path: Path, monkeypatch
) -> None:
    """The retraining CronJob authenticates with the token projected for the KFP API."""
    host, requests = kfp_api
    token = tmp_path / "token"
    token.write_text("projected-sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    code = _cli("schedule", host, "--cron", "0 0 3 * * 1")
    assert code == 0
    posts = [r for r in requests if r["method"] == "POST"]
    assert posts and {r["authorization"] for r in posts} == {"Bearer projected-sa-token"}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--cron", "0 3 * * 1"], "'0 3 * * 1' has 5 fields"),
        (["--cron", "0 0 3 * * 1", "--set", "train_federated.rounds=-1"], "train_federated.rounds"),
        (["--cron", "0 0 3 * * 1", "--set", "trainer.rounds=2"], "'trainer'"),
        (["--cron", "0 0 3 * * 1", "--set", "cluster.shared_pvc=x"], "fixed when the pipeline"),
    ],
)
def test_bad_schedule_input_is_named_and_nothing_reaches_the_api(
    kfp_api, capsys, extra: list[str], needle: str
) -> None:
    host, requests = kfp_api
    code = _cli("schedule", host, *extra)
    assert code == 1
    assert needle in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert not [r for r in requests if r["method"] == "POST"]


def test_compile_output_path(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "pipeline",
                "compile",
                "--project",
                str(ROOT),
                "--params",
                str(PARAMS),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert yaml.safe_load_all(out.read_text())
