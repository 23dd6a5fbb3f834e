"""Submit ``train_federated`` runs to a federation that lives on a Kubernetes cluster.

With ``train_federated.launcher: kubernetes`` the SuperLink and one SuperNode per hospital are
long-lived pods (``manifests/``); this launcher starts no Flower process. It waits until every
hospital in ``base.hospitals`` has a Ready SuperNode pod, submits the same generated Flower App
as the local launcher to the cluster's SuperLink (TLS unless ``cluster.insecure``), reads the
run's final status through Flower's Control API (what ``flwr ls`` shows), and copies what the
ServerApp wrote on the shared volume (``cluster.shared_dir``) into the stage's output in the
local launcher's layout. SuperNode pod logs are kept beside the outputs, on failure too.

Only the Kubernetes API goes through the ``kubernetes`` client (list pods, read pod logs); the
pure functions of :mod:`privfed.federated.kube_pods` decide readiness, paths and names so
that tests can check them (re-exported here, where they were before).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from privfed.config import ClusterSection, PrivFedConfig
from privfed.federated import RUN_RESULT_FILE
from privfed.federated.federation import Federation, FederationError, RunSpec, read_run_result
from privfed.federated.flower_app import build_run_config, write_app_dir
from privfed.federated.flower_control import (
    flwr_connection_toml,
    run_status,
    stop_run,
    submit_run,
)
from privfed.federated.kube_pods import (
    SupernodeReadiness,
    pod_is_ready,
    pod_log_name,
    pod_state,
    remote_run_dir,
    run_tag,
    supernode_readiness,
)

__all__ = [
    "CONNECTION",
    "KubernetesFederation",
    "PodApi",
    "SupernodeReadiness",
    "load_core_api",
    "pod_is_ready",
    "pod_log_name",
    "pod_state",
    "remote_run_dir",
    "run_tag",
    "supernode_readiness",
]

log = logging.getLogger(__name__)

#: Name of the SuperLink connection in the temporary ``$FLWR_HOME/config.toml``.
CONNECTION = "cluster"
#: How often the launcher asks the API server for SuperNode pods and Flower for a run's status.
POLL_S = 2.0


class PodApi(Protocol):
    """The part of ``kubernetes.client.CoreV1Api`` the launcher uses (read-only, two verbs)."""

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any: ...

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str: ...


def load_core_api() -> PodApi:
    """A CoreV1Api from the pod's ServiceAccount, or from ``~/.kube/config`` outside a cluster."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException as in_cluster:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as kubeconfig:
            raise FederationError(
                "train_federated.launcher=kubernetes needs the Kubernetes API: no in-cluster "
                f"ServiceAccount ({in_cluster}) and no usable kubeconfig ({kubeconfig})"
            ) from kubeconfig
    return client.CoreV1Api()


# -- the launcher ------------------------------------------------------------------------------
class KubernetesFederation(Federation):
    """``with KubernetesFederation(cfg, workdir) as fed: fed.run(spec)`` against the cluster.

    Args:
        cfg: the validated config; ``cluster`` says where the federation is.
        workdir: a private temporary folder (Flower App, ``FLWR_HOME``, logs).
        core_api: a ``CoreV1Api``-like object; by default one from the pod's ServiceAccount
            (falling back to a kubeconfig). Tests pass a stand-in.
    """

    def __init__(self, cfg: PrivFedConfig, workdir: Path, *, core_api: PodApi | None = None):
        self.cfg = cfg
        self.cluster: ClusterSection = cfg.cluster
        self.hospitals = list(cfg.base.hospitals)
        self.workdir = Path(workdir).resolve()
        self.log_dir = self.workdir / "logs"
        self.flwr_home = self.workdir / "flwr_home"
        self.tag = run_tag(datetime.now(UTC), uuid.uuid4().hex[:8])
        self.timings: dict[str, float] = {}
        self._api = core_api
        self._started_wall = time.time()
        self._env = {
            **os.environ,
            "FLWR_HOME": str(self.flwr_home),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    @property
    def api(self) -> PodApi:
        if self._api is None:
            self._api = load_core_api()
        return self._api

    def stop(self, error: BaseException | None = None) -> None:
        """Keep the SuperNode pods' logs; a failure to read them never hides the run's error.

        The pods are the cluster's, long-lived: nothing else is released here.
        """
        try:
            self.collect_logs()
        except Exception as log_err:
            # Trained models are not thrown away (and retrained by a retry) over missing logs.
            if error is None:
                log.warning("runs completed, but SuperNode pod logs could not be read: %s", log_err)
            else:
                error.add_note(f"(SuperNode pod logs could not be read either: {log_err})")

    def resume_root(self, models: Path) -> Path:
        """On the shared volume: the ServerApp runs in the SuperLink pod, not here."""
        return Path(self.cluster.shared_dir) / "resume"

    def data_digest(self) -> str:
        """ "": the data is on the hospitals' volumes, out of this pod's reach."""
        return ""

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        shared = Path(self.cluster.shared_dir)
        if not shared.is_dir() or not os.access(shared, os.W_OK):
            raise FederationError(
                f"cluster.shared_dir={self.cluster.shared_dir!r} is not a writable folder here: "
                f"mount PVC {self.cluster.shared_pvc!r} there (the ServerApp writes models to it; "
                "a Kubeflow pipeline mounts it when compiled with train_federated.launcher: "
                "kubernetes)"
            )
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        if self.cluster.insecure:
            log.warning(
                "cluster.insecure=true: talking to the SuperLink at %s over plaintext",
                self.cluster.superlink_address,
            )
            toml = flwr_connection_toml(CONNECTION, self.cluster.superlink_address, insecure=True)
        else:
            if not Path(self.cluster.root_certificates).is_file():
                raise FederationError(
                    f"cluster.root_certificates={self.cluster.root_certificates!r} does not "
                    "exist: mount the CA certificate Secret there, or set cluster.insecure"
                )
            toml = flwr_connection_toml(
                CONNECTION,
                self.cluster.superlink_address,
                insecure=False,
                root_certificates=self.cluster.root_certificates,
            )
        (self.flwr_home / "config.toml").write_text(toml)
        t0 = time.monotonic()
        self.wait_for_supernodes(self.cfg.train_federated.startup_timeout_s)
        self.timings["supernodes_ready_s"] = time.monotonic() - t0

    def wait_for_supernodes(self, timeout_s: float) -> SupernodeReadiness:
        """Block until every configured hospital has a Ready SuperNode pod, at most ``timeout_s``.

        Raises:
            FederationError: naming the hospitals still missing (and every pod's state), or a
                Ready SuperNode of a hospital that ``base.hospitals`` does not list.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            pods = self.api.list_namespaced_pod(
                self.cluster.namespace, label_selector=self.cluster.supernode_selector
            ).items
            state = supernode_readiness(pods, self.hospitals, self.cluster.hospital_label)
            if state.unexpected:
                raise FederationError(
                    f"SuperNode pods are Ready for hospitals not in base.hospitals "
                    f"({', '.join(self.hospitals)}): {', '.join(state.unexpected)}; they would "
                    "join the federation. Scale them to 0 or raise base.num_hospitals"
                )
            if not state.missing:
                log.info("SuperNodes Ready for %s", ", ".join(state.ready))
                return state
            if time.monotonic() >= deadline:
                pods_text = "\n".join(f"  {n}: {s}" for n, s in state.pods.items()) or "  (none)"
                raise FederationError(
                    f"no Ready SuperNode pod for {', '.join(state.missing)} within "
                    f"train_federated.startup_timeout_s={timeout_s:g} (namespace "
                    f"{self.cluster.namespace!r}, selector {self.cluster.supernode_selector!r}, "
                    f"hospital label {self.cluster.hospital_label!r}); pods found:\n{pods_text}"
                )
            log.info("waiting for SuperNode pods of %s", ", ".join(state.missing))
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    # -- runs ------------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Submit one run, wait for its final status, and copy its outputs to ``spec.out_dir``."""
        remote = Path(remote_run_dir(self.cluster.shared_dir, self.tag, spec.name))
        remote.mkdir(parents=True)
        run_config = build_run_config(
            self.cfg,
            out_dir=str(remote),
            dp=spec.dp,
            num_nodes=len(self.hospitals),
            resume_dir=str(spec.resume_dir) if spec.resume_dir else None,
            resume_key=spec.resume_key,
        )
        app_dir = self.workdir / f"app-{spec.name}"
        write_app_dir(app_dir, run_config)
        timeout_s = self.cfg.train_federated.run_timeout_s
        t0 = time.monotonic()
        run_id: str | None = None
        try:
            run_id = submit_run(
                app_dir=app_dir,
                connection=CONNECTION,
                name=spec.name,
                env=self._env,
                timeout_s=timeout_s,
                log_file=self.log_dir / f"flwr-run-{spec.name}.log",
            )
            status = self._final_status(run_id, spec.name, deadline=t0 + timeout_s)
        except FederationError as err:
            # The SuperLink outlives this pod: a run we give up on (timeout) would keep the
            # hospitals busy, and a retry of this step would queue behind it.
            self._stop(run_id or err.run_id, err)
            raise
        if status.get("status") != "finished:completed":
            raise FederationError(
                f"run {spec.name!r} (id {run_id}) ended as {status.get('status')!r}: "
                f"{status.get('status-details')}\nServerApp outputs so far kept in {remote}; "
                f"SuperNode pod logs in the kept logs folder"
            )
        if not (remote / RUN_RESULT_FILE).is_file():
            raise FederationError(
                f"run {spec.name!r} completed but {remote / RUN_RESULT_FILE} is missing here: "
                f"is PVC {self.cluster.shared_pvc!r} mounted at {self.cluster.shared_dir!r} in "
                "both this pod and the SuperLink pod (where the ServerApp writes)?"
            )
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(remote, spec.out_dir, dirs_exist_ok=True)
        result = read_run_result(spec, status, t0)
        shutil.rmtree(remote)
        with contextlib.suppress(OSError):  # the tag folder is shared by this stage's runs
            remote.parent.rmdir()
        return result

    def _stop(self, run_id: str | None, err: BaseException) -> None:
        """Best-effort ``flwr stop`` of an abandoned run; its failure is noted on ``err``."""
        if run_id is None:
            return
        try:
            stop_run(run_id, CONNECTION, self._env)
            log.warning("stopped run %s on the SuperLink after: %s", run_id, err)
        except (FederationError, OSError) as stop_err:
            err.add_note(f"(run {run_id} could not be stopped on the SuperLink: {stop_err})")

    def _final_status(self, run_id: str, name: str, *, deadline: float) -> dict[str, Any]:
        """Flower's final status, polled until the run is finished or the deadline passes."""
        while True:
            status = run_status(run_id, CONNECTION, self._env)
            if str(status.get("status", "")).startswith("finished"):
                return status
            if time.monotonic() >= deadline:
                raise FederationError(
                    f"run {name!r} (id {run_id}) still {status.get('status')!r} after "
                    f"train_federated.run_timeout_s={self.cfg.train_federated.run_timeout_s:g}"
                )
            time.sleep(POLL_S)

    # -- logs ------------------------------------------------------------------------------
    def collect_logs(self) -> list[Path]:
        """Write every SuperNode container's log since this stage started into ``log_dir``."""
        from kubernetes.client.exceptions import ApiException

        self.log_dir.mkdir(parents=True, exist_ok=True)
        since = int(time.time() - self._started_wall) + 60
        pods = self.api.list_namespaced_pod(
            self.cluster.namespace, label_selector=self.cluster.supernode_selector
        ).items
        written: list[Path] = []
        states = []
        for pod in pods:
            states.append(f"{pod.metadata.name}: {pod_state(pod)}")
            for container in pod.spec.containers:
                try:
                    text = self.api.read_namespaced_pod_log(
                        pod.metadata.name,
                        self.cluster.namespace,
                        container=container.name,
                        since_seconds=since,
                    )
                except ApiException as err:
                    if err.status != 400:  # 400: the container has not started; others are real
                        raise
                    text = f"(no log: {err.reason}: {err.body})\n"
                path = self.log_dir / pod_log_name(pod.metadata.name, container.name)
                path.write_text(text or "")
                written.append(path)
        (self.log_dir / "supernode-pods.txt").write_text("\n".join(states) + "\n")
        return written
