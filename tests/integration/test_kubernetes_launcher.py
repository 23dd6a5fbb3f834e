"""``train_federated.launcher: kubernetes`` against a real Flower federation on 127.0.0.1.

The SuperLink (with TLS from a CA made here), the SuperNodes and their warm ClientApp executors
are the real Flower binaries and PrivFed code, started as processes. Only the Kubernetes API is
replaced: ``PodApiStandIn`` answers ``list_namespaced_pod`` and ``read_namespaced_pod_log`` from
those processes (a SuperNode "pod" is Ready while its processes run; its logs are their logs).
It is a stand-in because no Kubernetes API server can run where these tests run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
)

from privfed.config import PrivFedConfig, config_from_dict
from privfed.federated import ROUNDS_FILE, RUN_RESULT_FILE
from privfed.federated.launcher import (
    FederationError,
    LocalFederation,
)
from privfed.stages import train_federated
from tests.conftest import raw_params

pytestmark = pytest.mark.integration

HOSPITAL_LABEL = "privfed.ai/hospital"


class TlsFederation(LocalFederation):
    """LocalFederation's processes: the SuperLink on TLS with SuperNode authentication, as the
    cluster runs it (the local launcher's default)."""

    def alive(self, name: str) -> bool:
        """A started process still runs; an executor (forked by the warm template, not a child
        of the launcher) counts once its log says it is ready, as a readiness probe would."""
        if name.startswith("executor-") and name not in dict(self.processes.procs):
            log = self.log_dir / f"{name}.log"
            return log.is_file() and "executor ready" in log.read_text(errors="replace")
        return any(n == name and p.poll() is None for n, p in self.processes.procs)


# -- the Kubernetes API stand-in ---------------------------------------------------------------
def _pod(hospital: str, *, ready: bool, phase: str = "Running") -> V1Pod:
    name = f"privfed-supernode-{hospital.replace('_', '-')}-7d9c-x2x"
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace="privfed",
            labels={"app.kubernetes.io/component": "supernode", HOSPITAL_LABEL: hospital},
        ),
        spec=V1PodSpec(containers=[V1Container(name="supernode"), V1Container(name="clientapp")]),
        status=V1PodStatus(
            phase=phase,
            conditions=[V1PodCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


class PodApiStandIn:
    """Answers the two CoreV1Api calls the launcher makes (stand-in: no API server here).

    ``federation`` given: one pod per hospital process pair, Ready while both run, logs from
    their log files. Otherwise a fixed list of pods (``pods``) with empty logs.
    """

    def __init__(
        self, *, federation: TlsFederation | None = None, pods: list[V1Pod] | None = None
    ) -> None:
        self.federation = federation
        self.fixed = pods or []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _pods(self) -> list[V1Pod]:
        if self.federation is None:
            return self.fixed
        pods = []
        for hospital_dir in self.federation.hospital_dirs:
            h = hospital_dir.name
            up = self.federation.alive(f"supernode-{h}") and self.federation.alive(f"executor-{h}")
            pods.append(_pod(h, ready=up))
        return pods

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> V1PodList:
        self.calls.append(("list_namespaced_pod", {"namespace": namespace, **kwargs}))
        assert namespace == "privfed"
        assert kwargs["label_selector"] == "app.kubernetes.io/component=supernode"
        return V1PodList(items=self._pods())

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str:
        self.calls.append(("read_namespaced_pod_log", {"name": name, **kwargs}))
        if self.federation is None:
            return ""
        hospital = next(p for p in self._pods() if p.metadata.name == name).metadata.labels[
            HOSPITAL_LABEL
        ]
        process = {"supernode": "supernode", "clientapp": "executor"}[kwargs["container"]]
        return (self.federation.log_dir / f"{process}-{hospital}.log").read_text()


# -- fixtures -----------------------------------------------------------------------------------
def _cluster_cfg(tmp_path: Path, address: str, ca: Path, **fed: Any) -> PrivFedConfig:
    return config_from_dict(
        raw_params(
            train_federated={"launcher": "kubernetes", **fed},
            cluster={
                "superlink_address": address,
                "root_certificates": str(ca),
                "shared_dir": str(tmp_path / "shared-runs"),
            },
        )
    )


@pytest.fixture
def tls_federation(partitions: Path, tmp_path: Path) -> Iterator[TlsFederation]:
    cfg = config_from_dict(raw_params(train_federated={"startup_timeout_s": 60}))
    hospitals = sorted(p for p in partitions.iterdir() if p.is_dir())
    with TlsFederation(cfg, hospitals, tmp_path / "cluster") as federation:
        assert federation.tls is not None and set(federation.enrolled) == {
            h.name for h in hospitals
        }
        yield federation


# -- tests --------------------------------------------------------------------------------------
def test_kubernetes_launcher_trains_and_lays_out_outputs_like_local(
    tls_federation: TlsFederation, tmp_path: Path
) -> None:
    # Prepare: the "cluster": SuperLink on TLS, one SuperNode per hospital; the stage's pod
    # sees the shared volume and the CA certificate
    cfg = _cluster_cfg(
        tmp_path,
        f"127.0.0.1:{tls_federation.port}",
        tls_federation.tls.ca_cert,
        startup_timeout_s=60,
    )
    (tmp_path / "shared-runs").mkdir()
    api = PodApiStandIn(federation=tls_federation)
    outputs = {"models": tmp_path / "models" / "federated", "metrics": tmp_path / "m.json"}
    # Execute: the partitions input is not given: on a cluster the data stays on hospital volumes
    metrics = train_federated.run(cfg, {}, outputs, kube_api=api)
    # Assert: the local launcher's layout, complete, for both runs
    models = outputs["models"]
    for name in ("federated", "federated_dp"):
        assert (models / name / "model.pt").is_file()
        assert (models / name / RUN_RESULT_FILE).is_file()
        assert sorted(p.name for p in (models / name / "checkpoints").iterdir()) == [
            "round_001.pt",
            "round_002.pt",
        ]
        run = metrics["runs"][name]
        assert run["rounds_completed"] == 2
        assert set(run["rounds"][-1]) >= {
            "val_macro_auroc.hospital_1",
            "val_macro_auroc.hospital_3",
        }
    rounds = (models / ROUNDS_FILE).read_text()
    assert '"dp_history"' in rounds and '"hospital_2"' in rounds
    assert outputs["metrics"].is_file()
    assert metrics["federation"]["supernodes_ready_s"] >= 0
    # logs: each run's streamed ServerApp log and each SuperNode pod's containers
    logs = {p.name for p in (models / "logs").iterdir()}
    assert {"flwr-run-federated.log", "flwr-run-federated_dp.log", "supernode-pods.txt"} <= logs
    assert "privfed-supernode-hospital-2-7d9c-x2x.clientapp.log" in logs
    # the shared volume holds nothing of this stage afterwards
    assert list((tmp_path / "shared-runs").iterdir()) == []
    # the launcher only listed pods and read logs
    assert {call for call, _ in api.calls} == {"list_namespaced_pod", "read_namespaced_pod_log"}


def test_kubernetes_launcher_names_the_hospital_without_a_ready_supernode(
    tmp_path: Path,
) -> None:
    # Prepare: hospital_2's SuperNode pod is Pending (e.g. its volume is not bound)
    ca = tmp_path / "ca.crt"
    ca.write_text("not used: the stage fails before it talks to the SuperLink\n")
    (tmp_path / "shared-runs").mkdir()
    cfg = _cluster_cfg(tmp_path, "127.0.0.1:9", ca, startup_timeout_s=3)
    api = PodApiStandIn(
        pods=[
            _pod("hospital_1", ready=True),
            _pod("hospital_2", ready=False, phase="Pending"),
            _pod("hospital_3", ready=True),
        ]
    )
    outputs = {"models": tmp_path / "models" / "federated", "metrics": tmp_path / "m.json"}
    # Execute
    t0 = time.monotonic()
    with pytest.raises(FederationError) as err:
        train_federated.run(cfg, {}, outputs, kube_api=api)
    elapsed = time.monotonic() - t0
    # Assert: within the bound, naming only the missing hospital, nothing published
    message = str(err.value)
    assert "no Ready SuperNode pod for hospital_2 within train_federated.startup_timeout_s=3" in (
        message
    )
    assert "hospital_1," not in message.splitlines()[0]
    assert "hospital_2: Pending, not Ready" in message
    assert 3 <= elapsed < 10
    assert not outputs["models"].exists() and not outputs["metrics"].exists()
    # the pods' logs and states are kept for the user
    kept = tmp_path / "models" / train_federated.FAILED_LOGS
    assert "Pending" in (kept / "supernode-pods.txt").read_text()
