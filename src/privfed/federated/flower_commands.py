"""Command lines of Flower's long-running processes, as the local launcher starts them.

One function per process: the SuperLink, a hospital's SuperNode (Flower's binary, or ours with
capped idle waits) and the warm ClientApp executor beside it. They only build argument lists,
so tests can check them without starting anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from privfed.federated.security import TlsFiles

__all__ = [
    "SUPEREXEC_POLL_S",
    "executor_command",
    "executor_poll_s",
    "flower_binary",
    "forkserver_command",
    "node_config_arg",
    "serverapp_executor_command",
    "superlink_command",
    "supernode_command",
    "toml_string",
]

#: How often flower-superexec looks for new ServerApp/ClientApp work (Flower's default is 1 s).
SUPEREXEC_POLL_S = "0.05"
#: Cap on the capped SuperNode's in-memory waits (its ClientApp's reply; Flower's is 0.5 s).
SUPERNODE_LOCAL_POLL_S = "0.01"


def flower_binary(name: str) -> str:
    """This interpreter's copy of a Flower entry point (the venv's), else ``name`` on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def toml_string(value: str) -> str:
    """A TOML basic string: a JSON string literal is one."""
    return json.dumps(value)


def superlink_command(
    port: int,
    *,
    host: str = "127.0.0.1",
    tls: TlsFiles | None = None,
    supernode_auth: bool = False,
    warm: bool = False,
) -> list[str]:
    """``flower-superlink``: flwr 1.41 serves the Runtime, Control and Fleet APIs on one port.

    With ``supernode_auth`` only SuperNodes whose public keys were registered
    (:func:`~privfed.federated.flower_control.register_supernode`) may connect; Flower
    requires TLS for it. ``warm``: our executor runs its ServerApps
    (:func:`serverapp_executor_command`), not a SuperExec it starts itself.
    """
    if supernode_auth and tls is None:
        raise ValueError("SuperNode authentication needs TLS (Flower refuses it in plaintext)")
    security = (
        ["--insecure"]
        if tls is None
        else [
            "--ssl-ca-certfile",
            str(tls.ca_cert),
            "--ssl-certfile",
            str(tls.cert),
            "--ssl-keyfile",
            str(tls.key),
        ]
    )
    return [
        flower_binary("flower-superlink"),
        *security,
        *(["--enable-supernode-auth"] if supernode_auth else []),
        "--disable-runtime-dependency-installation",
        *(["--isolation", "process"] if warm else []),
        "--host",
        host,
        "--port",
        str(port),
    ]


def supernode_command(
    superlink: str,
    *,
    runtime_port: int,
    node_config: str,
    warm: bool,
    root_certificates: str | None = None,
    idle_poll_s: float | None = None,
    auth_private_key: str | None = None,
) -> list[str]:
    """``flower-supernode`` for one hospital; ``warm``: our executor runs its ClientApps.

    With ``idle_poll_s``, Flower's SuperNode runs through :mod:`privfed.federated.supernode`,
    which caps its hard-coded 3 s idle sleep at that many seconds and its 0.5 s in-memory
    polls (for its ClientApp's reply) at :data:`SUPERNODE_LOCAL_POLL_S`.
    """
    security = (
        ["--insecure"] if root_certificates is None else ["--root-certificates", root_certificates]
    ) + (["--auth-supernode-private-key", auth_private_key] if auth_private_key else [])
    binary = (
        [flower_binary("flower-supernode")]
        if idle_poll_s is None
        else [
            sys.executable,
            "-m",
            "privfed.federated.supernode",
            "--idle-poll",
            str(idle_poll_s),
            "--local-poll",
            SUPERNODE_LOCAL_POLL_S,
        ]
    )
    return [
        *binary,
        *security,
        "--superlink",
        superlink,
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
        "--node-config",
        node_config,
        *(["--isolation", "process"] if warm else []),
    ]


def executor_poll_s(hospitals: int) -> str:
    """The executors' acquire poll: 0.05 s, lengthened past 10 hospitals on one machine.

    Each executor asks its SuperNode for a task on every poll; 50 of them at 0.05 s were
    1,000 requests a second on 2 cores while idle. Past 10 hospitals the interval grows with
    their number (0.25 s at 50), keeping the machine's total near 200 requests a second.
    """
    return f"{float(SUPEREXEC_POLL_S) * max(1.0, hospitals / 10):g}"


def executor_command(
    runtime_port: int, *, parent_pid: int | None, poll_s: str = SUPEREXEC_POLL_S
) -> list[str]:
    """The warm ClientApp executor serving the SuperNode whose Runtime API is on this port."""
    return [
        sys.executable,
        "-m",
        "privfed.federated.executor",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_port}",
        "--poll-interval",
        poll_s,
        *(["--parent-pid", str(parent_pid)] if parent_pid is not None else []),
    ]


def serverapp_executor_command(
    port: int, *, root_certificates: str | None, parent_pid: int | None
) -> list[str]:
    """The warm ServerApp executor serving the SuperLink whose Runtime API is on this port."""
    return [
        sys.executable,
        "-m",
        "privfed.federated.serverapp_executor",
        "--runtime-api-address",
        f"127.0.0.1:{port}",
        *(
            ["--insecure"]
            if root_certificates is None
            else ["--root-certificates", root_certificates]
        ),
        "--poll-interval",
        SUPEREXEC_POLL_S,
        *(["--parent-pid", str(parent_pid)] if parent_pid is not None else []),
    ]


def forkserver_command(task_modules: Sequence[str] = ()) -> list[str]:
    """The warm template the local launcher forks its executors from (requests on stdin);
    it imports ``task_modules`` (the run's task's ``runtime_imports``) besides its own."""
    return [sys.executable, "-m", "privfed.federated.forkserver", *task_modules]


def node_config_arg(hospital: str, data_path: str | Path, *, attack: str | None = None) -> str:
    """``--node-config`` value: the hospital's name and its partition folder (TOML strings).

    ``attack`` makes the SuperNode a red-team hospital (:mod:`privfed.federated.adversary`).
    """
    value = f"hospital={toml_string(hospital)} data-path={toml_string(str(data_path))}"
    return value + (f" attack={toml_string(attack)}" if attack else "")
