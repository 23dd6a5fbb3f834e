"""The local launcher: a real federation of Flower processes on 127.0.0.1.

A SuperLink and one SuperNode per hospital (each told only its own partition path with
``--node-config``), with TLS from a fresh CA and only enrolled SuperNodes unless
``train_federated.insecure``. Runs are submitted as the generated Flower App
(:mod:`privfed.federated.flower_app`) through the ``flwr`` CLI
(:mod:`privfed.federated.flower_control`). All processes are ended on exit, on failure too
(:mod:`privfed.federated.processes`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.federated.data_cache import DATA_CACHE_ENV
from privfed.federated.federation import Federation, FederationError, RunSpec, read_run_result
from privfed.federated.flower_app import build_run_config, write_app_dir
from privfed.federated.flower_commands import (
    SUPEREXEC_POLL_S,
    executor_command,
    executor_poll_s,
    forkserver_command,
    node_config_arg,
    serverapp_executor_command,
    superlink_command,
    supernode_command,
)
from privfed.federated.flower_control import (
    flwr_connection_toml,
    register_supernodes,
    run_status,
    submit_run,
    unregister_supernode,
)
from privfed.federated.forkserver import request_line
from privfed.federated.processes import ProcessGroup, free_port
from privfed.federated.resume import data_digest
from privfed.federated.security import NodeKey, TlsFiles, write_node_key, write_tls
from privfed.tasks import runtime_imports

__all__ = [
    "RESUME_DIR",
    "LocalFederation",
    # where they were before the split; import them from their own modules
    "FederationError",
    "RunSpec",
    "TlsFiles",
    "build_run_config",
    "executor_command",
    "flwr_connection_toml",
    "free_port",
    "node_config_arg",
    "read_run_result",
    "run_status",
    "submit_run",
    "superlink_command",
    "supernode_command",
    "write_app_dir",
]

log = logging.getLogger(__name__)

#: Beside the stage's models folder: where local runs keep their resume state.
RESUME_DIR = "federated-resume"


class LocalFederation(Federation):
    """Real local federation; ``with LocalFederation(cfg, dirs, workdir) as fed: fed.run(spec)``.

    Args:
        cfg: the validated config (``train_federated`` says how to start the processes).
        hospital_dirs: one partition folder per hospital, named as the hospital.
        workdir: a private folder for logs, TLS material, keys, ``FLWR_HOME`` and the App.
        attacks: hospital -> red-team mode, for robustness tests (never from params).
    """

    def __init__(
        self,
        cfg: PrivFedConfig,
        hospital_dirs: Sequence[Path],
        workdir: Path,
        *,
        attacks: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.attacks = dict(attacks or {})
        self.hospital_dirs = [Path(d).resolve() for d in hospital_dirs]
        self.workdir = Path(workdir).resolve()
        self.log_dir = self.workdir / "logs"
        self.flwr_home = self.workdir / "flwr_home"
        self.port = cfg.train_federated.port or free_port()
        self._env = {
            **os.environ,
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": SUPEREXEC_POLL_S,
            "PYTHONUNBUFFERED": "1",
            # Flower's usage telemetry: an HTTPS attempt (TLS context, DNS) from every
            # ClientApp task and ServerApp, ~0.2 s of CPU each on 2 cores; nothing to reach here
            "FLWR_TELEMETRY_ENABLED": "0",
            # ClientApp tasks keep featurized splits across rounds here (removed with workdir)
            DATA_CACHE_ENV: str(self.workdir / "data-cache"),
            # SuperLink/SuperNode spawn flower-superexec and flwr-* by name: use this venv's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.processes = ProcessGroup(self.log_dir, self._env)
        self.timings: dict[str, float] = {}
        self.tls: TlsFiles | None = None
        #: hospital -> the key pair enrolled for it in this federation
        self.enrolled: dict[str, NodeKey] = {}
        #: hospital -> the node id the SuperLink gave its enrolled key
        self.node_ids: dict[str, int] = {}
        #: hospital -> the kept log of its SuperNode that died and was restarted (once)
        self.restarted: dict[str, Path] = {}
        #: the warm template the executors are forked from (clientapp_launcher: warm)
        self._template: subprocess.Popen | None = None

    def _present_hospitals(self) -> list[str]:
        """Hospitals whose SuperNode still runs; fails if the SuperLink (or an executor) died."""
        procs, expendable = self.processes.procs, self.processes.expendable
        gone = {
            name.removeprefix("supernode-")
            for name, proc in procs
            if name.startswith("supernode-") and proc.poll() is not None
        }
        for name, proc in procs:
            hospital = name.split("-", 1)[-1]
            if proc.poll() is None or name in expendable or hospital in gone:
                continue
            raise self.processes.exited(name, proc)
        for hospital in sorted(gone - {n.split("-", 1)[-1] for n in expendable}):
            log.warning("%s's SuperNode is gone (dropout); this run goes on without it", hospital)
        return [d.name for d in self.hospital_dirs if d.name not in gone]

    def _restart_dead_supernodes(self) -> None:
        """Give a hospital whose SuperNode died since the last run one new SuperNode.

        A SuperNode can die between the two federations of a stage (e.g. under memory
        pressure); failing the stage for it would waste the first run. The new SuperNode gets
        a fresh enrolled key, and the dead one's node is unregistered (the SuperLink would
        list it, and refuse to activate it again, until its heartbeat expired). A hospital whose
        SuperNode dies again is a dropout (:meth:`_present_hospitals`).
        """
        warm = self.cfg.train_federated.clientapp_launcher == "warm"
        for hospital_dir in self.hospital_dirs:
            hospital = hospital_dir.name
            proc = self.processes.get(f"supernode-{hospital}")
            if proc is None or proc.poll() is None or hospital in self.restarted:
                continue
            kept = self.processes.retire(f"supernode-{hospital}")
            self.processes.retire(f"executor-{hospital}")
            log.warning(
                "%s's SuperNode exited with code %s since the last run (its log: %s); "
                "restarting it once",
                hospital,
                proc.returncode,
                kept,
            )
            self.restarted[hospital] = kept
            if hospital in self.enrolled:  # its old node and key are void from now on
                unregister_supernode(self.node_ids[hospital], "local", self._env)
                self.enroll(hospital)
            self.start_supernode(hospital_dir, warm=warm)

    def _deaths(self) -> str:
        """Which hospitals' SuperNodes have exited, with the end of each one's log."""
        lines = []
        for hospital_dir in self.hospital_dirs:
            name = f"supernode-{hospital_dir.name}"
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                lines.append(
                    f"\n{hospital_dir.name}'s SuperNode exited with code {proc.returncode} "
                    f"({name}.log, kept with the stage's Flower logs); last lines:\n"
                    + self.processes.tail(name)
                )
        return "".join(lines)

    # -- the Federation interface ---------------------------------------------------------
    def resume_root(self, models: Path) -> Path:
        """Beside the stage's output: the ServerApp runs on this machine."""
        return models.parent / RESUME_DIR

    def data_digest(self) -> str:
        """The partitions' digest: a resumed run must see the same data."""
        return data_digest(self.hospital_dirs)

    def prepare_links(self) -> None:
        """A fresh Flower home whose connection points at this SuperLink, and TLS with a fresh
        CA unless ``insecure`` (logged as a warning)."""
        shutil.rmtree(self.flwr_home, ignore_errors=True)
        self.flwr_home.mkdir(parents=True)
        if self.cfg.train_federated.insecure:
            log.warning(
                "train_federated.insecure=true: the SuperLink and SuperNodes talk plaintext "
                "HTTP without node authentication (for debugging only)"
            )
            self.tls = None
        else:
            self.tls = write_tls(self.workdir / "tls")
        (self.flwr_home / "config.toml").write_text(
            flwr_connection_toml(
                "local",
                f"127.0.0.1:{self.port}",
                insecure=self.tls is None,
                root_certificates=str(self.tls.ca_cert) if self.tls else None,
            )
        )

    def start(self) -> None:
        """SuperLink, then (enrolled) SuperNodes; TLS with a fresh CA unless ``insecure``."""
        fed = self.cfg.train_federated
        self.prepare_links()
        t0 = time.monotonic()
        auth = fed.supernode_auth and self.tls is not None
        warm = fed.clientapp_launcher == "warm"
        if warm:  # first: its imports are the longest part of start-up
            self._template = self.processes.start(
                "warm-template",
                forkserver_command(runtime_imports(self.cfg.base.task)),
                stdin=subprocess.PIPE,
            )
        self.processes.start(
            "superlink",
            superlink_command(self.port, tls=self.tls, supernode_auth=auth, warm=warm),
        )
        self.processes.wait_port(self.port, fed.startup_timeout_s)
        self.timings["superlink_ready_s"] = time.monotonic() - t0
        if warm:  # the ServerApps of this SuperLink's runs, forked warm
            self._fork(
                "serverapp-executor",
                "privfed.federated.serverapp_executor",
                serverapp_executor_command(
                    self.port,
                    root_certificates=str(self.tls.ca_cert) if self.tls else None,
                    parent_pid=None,
                )[3:],
            )
        if auth:
            self.enroll(*(d.name for d in self.hospital_dirs))
        for hospital_dir in self.hospital_dirs:
            self.start_supernode(hospital_dir, warm=warm)
        log.info(
            "federation up: SuperLink 127.0.0.1:%d (%s), %d SuperNodes (%s), %s ClientApps",
            self.port,
            "TLS, enrolled SuperNodes only" if auth else ("TLS" if self.tls else "PLAINTEXT"),
            len(self.hospital_dirs),
            ", ".join(d.name for d in self.hospital_dirs),
            "warm" if warm else "per-message",
        )

    def _fork(self, name: str, module: str, argv: list[str]) -> None:
        """Ask the warm template (:mod:`privfed.federated.forkserver`) for a process."""
        if self._template is None or self._template.stdin is None:
            raise FederationError(f"no warm template to start {name} (clientapp_launcher)")
        log_file = self.log_dir / f"{name}.log"
        self._template.stdin.write(request_line(name, module, argv, str(log_file)))
        self._template.stdin.flush()

    def enroll(self, *hospitals: str) -> list[NodeKey]:
        """A fresh key pair per hospital, registered with the SuperLink.

        The node id the SuperLink gives each key is kept: the ServerApp accepts replies only
        from these ids (anyone who reaches the SuperLink can register a key of their own).
        """
        keys = [write_node_key(self.workdir / "keys", h) for h in hospitals]
        node_ids = register_supernodes([k.public for k in keys], "local", self._env)
        for hospital, key, node_id in zip(hospitals, keys, node_ids, strict=True):
            if not node_id.isdigit() or node_id == "0":
                raise FederationError(
                    f"registering {hospital}'s SuperNode key gave no node id: {node_id!r}"
                )
            self.enrolled[hospital] = key
            self.node_ids[hospital] = int(node_id)
            log.info("enrolled %s as node %s (%s)", hospital, node_id, key.fingerprint)
        return keys

    def start_supernode(
        self,
        hospital_dir: Path,
        *,
        warm: bool,
        auth_key: Path | None = None,
        name: str | None = None,
        expendable: bool = False,
    ) -> subprocess.Popen:
        """One hospital's SuperNode (and its warm ClientApp executor) on 127.0.0.1.

        It authenticates with the hospital's enrolled key (or ``auth_key``) when the SuperLink
        requires it. An ``expendable`` SuperNode may exit without failing the federation. The
        executor is forked from the warm template when there is one.
        """
        hospital = hospital_dir.name
        if expendable:
            self.processes.expendable |= {
                f"supernode-{name or hospital}",
                f"executor-{name or hospital}",
            }
        runtime_port = free_port()
        key = auth_key or (self.enrolled[hospital].private if hospital in self.enrolled else None)
        supernode = self.processes.start(
            f"supernode-{name or hospital}",
            supernode_command(
                f"127.0.0.1:{self.port}",
                runtime_port=runtime_port,
                node_config=node_config_arg(
                    hospital, hospital_dir, attack=self.attacks.get(hospital)
                ),
                warm=warm,
                root_certificates=str(self.tls.ca_cert) if self.tls else None,
                idle_poll_s=self.cfg.train_federated.supernode_poll_s,
                auth_private_key=str(key) if key else None,
            ),
        )
        if warm:  # our long-lived executor runs this SuperNode's ClientApp tasks
            command = executor_command(
                runtime_port,
                parent_pid=supernode.pid,
                poll_s=executor_poll_s(len(self.hospital_dirs)),
            )
            if self._template is not None:
                self._fork(
                    f"executor-{name or hospital}", "privfed.federated.executor", command[3:]
                )
            else:
                self.processes.start(f"executor-{name or hospital}", command)
        return supernode

    def stop(self, error: BaseException | None = None) -> None:
        """End every process this federation started (SIGTERM, then SIGKILL after 10 s)."""
        if self._template is not None and self._template.stdin is not None:
            with contextlib.suppress(OSError):
                self._template.stdin.close()
        self._template = None
        self.processes.stop()

    # -- runs ---------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Submit one run, stream its logs, and return its result (or raise).

        A hospital whose SuperNode died since the last run gets a new one, once; one whose
        SuperNode died again is left out (a dropout), with a warning; the ServerApp still
        requires ``min_train_nodes`` hospitals. A failed run's error names each hospital whose
        SuperNode exited, with the end of its log.
        """
        self._restart_dead_supernodes()
        present = self._present_hospitals()
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        run_config = build_run_config(
            self.cfg,
            out_dir=str(spec.out_dir.resolve()),
            dp=spec.dp,
            num_nodes=len(present),
            resume_dir=str(spec.resume_dir.resolve()) if spec.resume_dir else None,
            resume_key=spec.resume_key,
            enrolled={h: n for h, n in self.node_ids.items() if h in present},
        )
        app_dir = self.workdir / f"app-{spec.name}"
        write_app_dir(app_dir, run_config)
        t0 = time.monotonic()
        run_id = submit_run(
            app_dir=app_dir,
            connection="local",
            name=spec.name,
            env=self._env,
            timeout_s=self.cfg.train_federated.run_timeout_s,
        )
        status = run_status(run_id, "local", self._env)
        if status.get("status") != "finished:completed":
            raise FederationError(
                f"run {spec.name!r} (id {run_id}) ended as {status.get('status')!r}: "
                f"{status.get('status-details')}"
                + self._deaths()
                + "\nSuperLink log:\n"
                + self.processes.tail("superlink")
            )
        return read_run_result(spec, status, t0)
