"""The docker launcher: the local launcher's federation with each Flower process in a container.

With ``train_federated.launcher: docker`` the SuperLink (which runs the ServerApps) is one
container of the project image (``kubeflow.image``, env ``PRIVFED_IMAGE``) and each hospital's
SuperNode (which runs that hospital's ClientApps) is a container of its own that mounts only
that hospital's partition, read-only, the CA certificate and its own enrolled key. Every
container shares the host network and listens on 127.0.0.1 only: no Docker bridge, no address
outside the machine. TLS and SuperNode authentication are those of the local launcher.

The stage itself stays on the host, as the Kubeflow pod of the kubernetes launcher does: it
makes the TLS material and keys, enrolls the SuperNodes and submits runs with the ``flwr`` CLI.
The ServerApp writes into a run folder mounted into the SuperLink container, and the run is
copied to the stage's output from there. ClientApps and ServerApps run Flower's stock way (a
process per message inside the container): the warm template forks processes on this host, so
it cannot serve containers. Containers carry the label ``privfed.federation``; the launcher
removes its own when it stops, but a stage killed outright (``kill -9``, OOM) leaves them
running: ``docker rm -f $(docker ps -q --filter label=privfed.federation)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.federated.federation import FederationError, RunSpec
from privfed.federated.flower_commands import node_config_arg, superlink_command, supernode_command
from privfed.federated.launcher import RESUME_DIR, LocalFederation
from privfed.federated.processes import free_port

__all__ = [
    "CONTAINER_ENV",
    "DockerFederation",
    "Mount",
    "docker_binary",
    "docker_run_command",
    "in_image",
]

log = logging.getLogger(__name__)

#: Environment of every Flower container: a writable home for Flower and MLflow whatever the
#: user id, quick SuperExec polls, no telemetry (nothing outside the machine is reached).
CONTAINER_ENV = {
    "HOME": "/tmp",
    "FLWR_HOME": "/tmp/flwr",
    "FLWR_TELEMETRY_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class Mount:
    """A host path bound at the same path in a container (absolute paths stay valid)."""

    path: Path
    read_only: bool = True

    def arg(self) -> str:
        spec = f"type=bind,source={self.path},target={self.path}"
        return spec + (",readonly" if self.read_only else "")


def docker_binary() -> str:
    """The ``docker`` CLI on PATH, or an error saying the launcher needs it."""
    found = shutil.which("docker")
    if found is None:
        raise FederationError(
            "train_federated.launcher=docker needs the docker CLI on PATH and a running daemon "
            "(README 'Run on Kubeflow': `make images`)"
        )
    return found


def in_image(command: Sequence[str]) -> list[str]:
    """A launcher command line as the image runs it: this venv's python and Flower entry
    points become the image's (on its PATH)."""
    head, *rest = command
    if head == sys.executable:
        return ["python", *rest]
    name = Path(head).name
    if name.startswith(("flower-", "flwr")):
        return [name, *rest]
    return list(command)


def docker_run_command(
    *,
    docker: str,
    name: str,
    image: str,
    command: Sequence[str],
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    user: str,
    label: str,
) -> list[str]:
    """``docker run`` of one Flower process: host network, the given mounts and nothing else.

    ``--init`` reaps the per-message ClientApp processes and forwards SIGTERM; ``--rm`` removes
    the container when it exits; ``label`` lets the launcher remove every container it made.
    """
    args = [
        docker,
        "run",
        "--rm",
        "--init",
        "--network",
        "host",
        "--name",
        name,
        "--label",
        label,
        "--user",
        user,
    ]
    for mount in mounts:
        args += ["--mount", mount.arg()]
    for key, value in sorted(env.items()):
        args += ["--env", f"{key}={value}"]
    return [*args, image, *command]


class DockerFederation(LocalFederation):
    """``with DockerFederation(cfg, dirs, workdir) as fed: fed.run(spec)``, in containers.

    Args:
        cfg: the validated config; ``kubeflow.image`` (or ``PRIVFED_IMAGE``) is the image.
        hospital_dirs: one partition folder per hospital, named as the hospital.
        workdir: a private folder for logs, TLS material, keys, ``FLWR_HOME``, the App and the
            runs' outputs (mounted into the SuperLink container).
        image: the image to run, instead of the configured one.
    """

    def __init__(
        self,
        cfg: PrivFedConfig,
        hospital_dirs: Sequence[Path],
        workdir: Path,
        *,
        image: str | None = None,
    ) -> None:
        super().__init__(cfg, hospital_dirs, workdir)
        self.docker = docker_binary()
        # the components' image (privfed.kubeflow.settings.cpu_image: the env wins over params)
        self.image = image or os.environ.get("PRIVFED_IMAGE") or cfg.kubeflow.image
        self.federation_id = uuid.uuid4().hex[:8]
        self.label = f"privfed.federation={self.federation_id}"
        self.runs_dir = self.workdir / "runs"
        # the containers' user owns what they write in the mounted folders: the stage's
        self.user = f"{os.getuid()}:{os.getgid()}"
        self._resume_root: Path | None = None

    def container_name(self, process: str) -> str:
        """The container of a Flower process (``superlink``, ``supernode-<hospital>``)."""
        return f"privfed-{self.federation_id}-{process}"

    def _start_container(
        self, process: str, command: Sequence[str], mounts: Sequence[Mount]
    ) -> subprocess.Popen:
        name = self.container_name(process)
        env = dict(CONTAINER_ENV)
        env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = self._env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"]
        return self.processes.start(
            process,
            docker_run_command(
                docker=self.docker,
                name=name,
                image=self.image,
                command=in_image(command),
                mounts=mounts,
                env=env,
                user=self.user,
                label=self.label,
            ),
        )

    def _wait_running(self, processes: Sequence[str], timeout_s: float) -> None:
        """Until each process's container runs: ``docker run`` returns before it exists.

        Without this, ``start`` could return while a hospital's container is still being
        created (a ``docker exec`` into it then fails with "No such container").
        """
        deadline = time.monotonic() + timeout_s
        for process in processes:
            name = self.container_name(process)
            while True:
                self.processes.check_alive()  # a `docker run` that exited says why
                state = subprocess.run(
                    [self.docker, "inspect", "--format", "{{.State.Running}}", name],
                    capture_output=True,
                    text=True,
                )
                if state.returncode == 0 and state.stdout.strip() == "true":
                    break
                if time.monotonic() > deadline:
                    raise FederationError(
                        f"container {name} was not running {timeout_s:.0f} s after `docker run` "
                        f"(train_federated.startup_timeout_s): {state.stderr.strip()}\n"
                        + self.processes.tail(process)
                    )
                time.sleep(0.1)

    def _check_image(self) -> None:
        found = subprocess.run(
            [self.docker, "image", "inspect", "--format", "{{.Id}}", self.image],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0:
            raise FederationError(
                f"image {self.image!r} (kubeflow.image or PRIVFED_IMAGE) is not on this Docker "
                f"daemon: build it with `make images`, or pull it ({found.stderr.strip()})"
            )

    # -- the Federation interface ---------------------------------------------------------
    def resume_root(self, models: Path) -> Path:
        """Beside the stage's output, as for the local launcher; the SuperLink mounts it."""
        self._resume_root = (models.parent / RESUME_DIR).resolve()
        return self._resume_root

    def start(self) -> None:
        """SuperLink container, then one (enrolled) SuperNode container per hospital."""
        fed = self.cfg.train_federated
        self._check_image()
        if fed.clientapp_launcher == "warm":
            log.info("launcher docker: ClientApps run per message inside each hospital's container")
        self.prepare_links()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        auth = fed.supernode_auth and self.tls is not None
        mounts = [Mount(self.runs_dir, read_only=False)]
        if self._resume_root is not None:
            self._resume_root.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(self._resume_root, read_only=False))
        if self.tls is not None:
            mounts += [Mount(self.tls.ca_cert), Mount(self.tls.cert), Mount(self.tls.key)]
        t0 = time.monotonic()
        self._start_container(
            "superlink",
            superlink_command(self.port, tls=self.tls, supernode_auth=auth, warm=False),
            mounts,
        )
        self.processes.wait_port(self.port, fed.startup_timeout_s)
        self.timings["superlink_ready_s"] = time.monotonic() - t0
        if auth:
            self.enroll(*(d.name for d in self.hospital_dirs))
        for hospital_dir in self.hospital_dirs:
            self.start_supernode(hospital_dir, warm=False)
        self._wait_running(
            [f"supernode-{d.name}" for d in self.hospital_dirs], fed.startup_timeout_s
        )
        log.info(
            "federation up in containers of %s: SuperLink 127.0.0.1:%d (%s), %d SuperNodes (%s)",
            self.image,
            self.port,
            "TLS, enrolled SuperNodes only" if auth else ("TLS" if self.tls else "PLAINTEXT"),
            len(self.hospital_dirs),
            ", ".join(d.name for d in self.hospital_dirs),
        )

    def supernode_mounts(self, hospital_dir: Path, key: Path | None) -> list[Mount]:
        """All a hospital's container sees of the host: its partition, the CA, its own key."""
        mounts = [Mount(hospital_dir.resolve())]
        if self.tls is not None:
            mounts.append(Mount(self.tls.ca_cert))
        if key is not None:
            mounts.append(Mount(key.resolve()))
        return mounts

    def start_supernode(
        self,
        hospital_dir: Path,
        *,
        warm: bool,
        auth_key: Path | None = None,
        name: str | None = None,
        expendable: bool = False,
    ) -> subprocess.Popen:
        """One hospital's SuperNode container; ``warm`` is ignored (see the module docstring)."""
        hospital = hospital_dir.name
        process = f"supernode-{name or hospital}"
        if expendable:
            self.processes.expendable.add(process)
        key = auth_key or (self.enrolled[hospital].private if hospital in self.enrolled else None)
        command = supernode_command(
            f"127.0.0.1:{self.port}",
            runtime_port=free_port(),
            node_config=node_config_arg(hospital, hospital_dir, attack=self.attacks.get(hospital)),
            warm=False,
            root_certificates=str(self.tls.ca_cert) if self.tls else None,
            idle_poll_s=self.cfg.train_federated.supernode_poll_s,
            auth_private_key=str(key) if key else None,
        )
        return self._start_container(process, command, self.supernode_mounts(hospital_dir, key))

    def stop(self, error: BaseException | None = None) -> None:
        """Stop the containers' ``docker run`` processes, then remove any container left."""
        super().stop(error)
        left = subprocess.run(
            [self.docker, "ps", "-aq", "--filter", f"label={self.label}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if left:
            log.warning("removing %d containers still there after stop", len(left))
            subprocess.run([self.docker, "rm", "-f", *left], capture_output=True, check=True)

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """The local launcher's run, written under the mounted runs folder, then copied out."""
        mounted = dataclasses.replace(spec, out_dir=self.runs_dir / spec.name)
        result = super().run(mounted)
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(mounted.out_dir, spec.out_dir, dirs_exist_ok=True)
        shutil.rmtree(mounted.out_dir)
        return result
