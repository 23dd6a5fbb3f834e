"""Pure pieces of the Kubernetes launcher: readiness, names, paths, Flower connection and args."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flwr.common.config import parse_config_args  # what flower-supernode parses it with
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
)

from privfed.config import ClusterSection, ConfigError, config_from_dict
from privfed.federated.federation import FederationError, RunSpec
from privfed.federated.flower_app import build_run_config
from privfed.federated.flower_commands import (
    node_config_arg,
    superlink_command,
    supernode_command,
)
from privfed.federated.flower_control import flwr_connection_toml
from privfed.federated.kube_pods import (
    pod_is_ready,
    pod_log_name,
    pod_state,
    remote_run_dir,
    run_tag,
    supernode_readiness,
)
from privfed.federated.kubernetes import KubernetesFederation
from privfed.federated.security import TlsFiles
from tests.conftest import raw_params

LABEL = "privfed.ai/hospital"


def _pod(
    hospital: str | None,
    *,
    phase: str = "Running",
    ready: bool = True,
    name: str | None = None,
    deleting: bool = False,
    waiting: str | None = None,
    unschedulable: str | None = None,
) -> V1Pod:
    labels = {"app.kubernetes.io/component": "supernode"}
    if hospital is not None:
        labels[LABEL] = hospital
    conditions = [V1PodCondition(type="Ready", status="True" if ready else "False")]
    if unschedulable:
        conditions.append(
            V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message=unschedulable
            )
        )
    statuses = None
    if waiting:
        statuses = [
            V1ContainerStatus(
                name="clientapp",
                image="img",
                image_id="",
                ready=False,
                restart_count=4,
                state=V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting)),
            )
        ]
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name or f"sn-{hospital}",
            labels=labels,
            deletion_timestamp=datetime(2026, 1, 1, tzinfo=UTC) if deleting else None,
        ),
        spec=V1PodSpec(containers=[V1Container(name="supernode"), V1Container(name="clientapp")]),
        status=V1PodStatus(phase=phase, conditions=conditions, container_statuses=statuses),
    )


# -- readiness ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod("h1"), True),
        (_pod("h1", ready=False), False),
        (_pod("h1", phase="Pending", ready=False), False),
        (_pod("h1", phase="Succeeded", ready=True), False),
        (_pod("h1", deleting=True), False),
    ],
)
def test_pod_is_ready(pod: V1Pod, expected: bool) -> None:
    assert pod_is_ready(pod) is expected


def test_readiness_names_missing_and_unexpected_hospitals() -> None:
    # Prepare: h1 Ready (twice, as during a rolling update), h2 not Ready, h3 absent,
    # h9 Ready but not configured, one pod without the hospital label
    pods = [
        _pod("hospital_1", name="a"),
        _pod("hospital_1", name="b", ready=False),
        _pod("hospital_2", phase="Pending", ready=False),
        _pod("hospital_9"),
        _pod(None, name="stray"),
    ]
    # Execute
    state = supernode_readiness(pods, ["hospital_1", "hospital_2", "hospital_3"], LABEL)
    # Assert
    assert state.ready == ("hospital_1",)
    assert state.missing == ("hospital_2", "hospital_3")
    assert state.unexpected == ("<no label>", "hospital_9")
    assert not state.ok
    assert state.pods["sn-hospital_2"] == "hospital_2: Pending, not Ready"


def test_readiness_ok_when_every_hospital_is_ready() -> None:
    state = supernode_readiness([_pod("h1"), _pod("h2")], ["h1", "h2"], LABEL)
    assert state.ok and state.ready == ("h1", "h2") and state.missing == ()


def test_pod_state_says_why_a_pod_is_not_ready() -> None:
    assert pod_state(_pod("h1")) == "Running, Ready"
    assert pod_state(_pod("h", ready=False, waiting="CrashLoopBackOff")) == (
        "Running, not Ready, clientapp: CrashLoopBackOff, clientapp: 4 restarts"
    )
    assert pod_state(
        _pod("h", phase="Pending", ready=False, unschedulable="0/3 nodes: Insufficient gpu")
    ) == ("Pending, not Ready, Unschedulable: 0/3 nodes: Insufficient gpu")
    assert pod_state(_pod("h", deleting=True)) == "Terminating"


# -- names and paths ----------------------------------------------------------------------------
def test_run_tag_is_utc_sortable_and_rejects_odd_tokens() -> None:
    assert run_tag(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), "ab12") == "20260304T050607Z-ab12"
    with pytest.raises(ValueError, match="'a/b'"):
        run_tag(datetime(2026, 3, 4, tzinfo=UTC), "a/b")


def test_remote_run_dir_is_under_the_shared_dir() -> None:
    assert str(remote_run_dir("/mnt/privfed/runs", "T-1", "federated_dp")) == (
        "/mnt/privfed/runs/T-1/federated_dp"
    )
    with pytest.raises(ValueError, match="'runs'"):
        remote_run_dir("runs", "T-1", "federated")
    with pytest.raises(ValueError, match="'..'"):
        remote_run_dir("/mnt/privfed/runs", "..", "federated")
    with pytest.raises(ValueError, match="'a/b'"):
        remote_run_dir("/mnt/privfed/runs", "T-1", "a/b")


def test_pod_log_name() -> None:
    assert pod_log_name("privfed-supernode-hospital-1-abc", "clientapp") == (
        "privfed-supernode-hospital-1-abc.clientapp.log"
    )


# -- Flower connection, run config and command lines --------------------------------------------
def test_flwr_connection_toml_with_tls() -> None:
    text = flwr_connection_toml(
        "cluster", "privfed-superlink.privfed.svc.cluster.local:9093",
        insecure=False, root_certificates="/etc/privfed/tls/ca.crt",
    )  # fmt: skip
    assert tomllib.loads(text) == {
        "superlink": {
            "default": "cluster",
            "cluster": {
                "address": "privfed-superlink.privfed.svc.cluster.local:9093",
                "root-certificates": "/etc/privfed/tls/ca.crt",
            },
        }
    }


def test_flwr_connection_toml_insecure_and_bad_values() -> None:
    assert tomllib.loads(flwr_connection_toml("local", "127.0.0.1:1", insecure=True)) == {
        "superlink": {"default": "local", "local": {"address": "127.0.0.1:1", "insecure": True}}
    }
    with pytest.raises(ValueError, match="not both or neither"):
        flwr_connection_toml("c", "h:1", insecure=True, root_certificates="/ca.crt")
    with pytest.raises(ValueError, match="not both or neither"):
        flwr_connection_toml("c", "h:1", insecure=False)
    with pytest.raises(ValueError, match="'a.b'"):
        flwr_connection_toml("a.b", "h:1", insecure=True)


def test_node_config_arg_parses_as_flower_reads_it() -> None:
    arg = node_config_arg("hospital_1", "/data/hospital")
    assert arg == 'hospital="hospital_1" data-path="/data/hospital"'
    assert parse_config_args([arg]) == {"hospital": "hospital_1", "data-path": "/data/hospital"}


def test_build_run_config_carries_the_validated_config() -> None:
    cfg = config_from_dict(raw_params())
    run_config = build_run_config(
        cfg, out_dir="/mnt/privfed/runs/T/federated", dp=True, num_nodes=3
    )
    assert run_config["out-dir"] == "/mnt/privfed/runs/T/federated"
    assert run_config["dp"] is True and run_config["num-nodes"] == 3
    assert json.loads(run_config["privfed-config"]) == cfg.model_dump(mode="json")
    with pytest.raises(ValueError, match="'models/x'"):
        build_run_config(cfg, out_dir="models/x", dp=False, num_nodes=3)


def test_superlink_and_supernode_commands_use_tls_when_given() -> None:
    tls = TlsFiles(ca_cert=Path("/tls/ca.crt"), cert=Path("/tls/tls.crt"), key=Path("/tls/tls.key"))
    link = superlink_command(9093, host="0.0.0.0", tls=tls)
    assert "--insecure" not in link
    assert link[link.index("--ssl-ca-certfile") + 1] == "/tls/ca.crt"
    assert link[link.index("--ssl-certfile") + 1] == "/tls/tls.crt"
    assert link[link.index("--ssl-keyfile") + 1] == "/tls/tls.key"
    assert link[-4:] == ["--host", "0.0.0.0", "--port", "9093"]
    assert "--insecure" in superlink_command(8000)
    node = supernode_command(
        "link:9093", runtime_port=9094, node_config="x=1", warm=True, root_certificates="/ca"
    )
    assert "--insecure" not in node
    assert node[node.index("--root-certificates") + 1] == "/ca"
    assert node[-2:] == ["--isolation", "process"]


# -- cluster section ------------------------------------------------------------------------------
def test_cluster_selector_and_paths_are_validated() -> None:
    assert ClusterSection().supernode_labels == {"app.kubernetes.io/component": "supernode"}
    assert ClusterSection.parse_selector("a=b, c.io/d=e") == {"a": "b", "c.io/d": "e"}
    for key, value in [
        ("supernode_selector", "component in (supernode)"),
        ("shared_dir", "runs"),
        ("root_certificates", "ca.crt"),
        ("superlink_address", "https://privfed-superlink"),
        ("hospital_label", "privfed.ai/hospital name"),
        ("namespace", "PrivFed"),
    ]:
        with pytest.raises(ConfigError, match=f"cluster.{key}") as err:
            config_from_dict(raw_params(cluster={key: value}))
        assert repr(value) in str(err.value)


# -- the readiness wait, with a stand-in for the API server --------------------------------------
class _Pods:
    """Stand-in for CoreV1Api.list_namespaced_pod (no API server in unit tests)."""

    def __init__(self, pods: list[V1Pod]) -> None:
        self.pods = pods

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> V1PodList:
        return V1PodList(items=self.pods)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str:
        return ""


def test_wait_refuses_a_ready_supernode_of_an_unconfigured_hospital(tmp_path: Path) -> None:
    cfg = config_from_dict(raw_params())  # hospital_1..hospital_3
    pods = [_pod(f"hospital_{i}") for i in (1, 2, 3, 4)]
    fed = KubernetesFederation(cfg, tmp_path, core_api=_Pods(pods))
    with pytest.raises(FederationError, match="not in base.hospitals .*: hospital_4"):
        fed.wait_for_supernodes(timeout_s=5)


def test_wait_returns_when_all_configured_hospitals_are_ready(tmp_path: Path) -> None:
    cfg = config_from_dict(raw_params())
    fed = KubernetesFederation(
        cfg, tmp_path, core_api=_Pods([_pod(f"hospital_{i}") for i in (1, 2, 3)])
    )
    assert fed.wait_for_supernodes(timeout_s=1).ready == ("hospital_1", "hospital_2", "hospital_3")


def test_a_run_given_up_on_is_stopped_on_the_superlink(tmp_path: Path, monkeypatch) -> None:
    """The SuperLink outlives the step: a timed-out run must not keep the hospitals busy."""
    import privfed.federated.kubernetes as k8s
    from tests.conftest import raw_params

    # Prepare: submission times out after Flower gave the run an id
    raw = raw_params(cluster={"shared_dir": str(tmp_path / "runs"), "insecure": True})
    (tmp_path / "runs").mkdir()
    fed = KubernetesFederation(config_from_dict(raw), tmp_path / "work")
    stopped: list[str] = []

    def timed_out(**kwargs: Any) -> str:
        err = FederationError("run 'federated' exceeded train_federated.run_timeout_s=1")
        err.run_id = "77"
        raise err

    monkeypatch.setattr(k8s, "submit_run", timed_out)
    monkeypatch.setattr(k8s, "stop_run", lambda run_id, *a: stopped.append(run_id))
    # Execute / Assert: the error still reaches the caller, and the run was stopped
    with pytest.raises(FederationError, match="run_timeout_s"):
        fed.run(RunSpec(name="federated", out_dir=tmp_path / "out", dp=False))
    assert stopped == ["77"]
