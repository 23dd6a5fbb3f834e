"""The operator's side of a SuperLink: the ``flwr`` CLI, called as a subprocess.

Both launchers reach the SuperLink's Control API only through these functions: which
SuperLink ``flwr`` talks to (``$FLWR_HOME/config.toml``), enrolling a SuperNode's key, and
submitting, listing and stopping runs. Hospitals never get this path (see docs/federation.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from privfed.federated.federation import FederationError
from privfed.federated.flower_commands import flower_binary, toml_string

__all__ = [
    "flwr_connection_toml",
    "register_supernode",
    "register_supernodes",
    "run_status",
    "stop_run",
    "submit_run",
    "unregister_supernode",
]

log = logging.getLogger(__name__)


def flwr_connection_toml(
    name: str, address: str, *, insecure: bool, root_certificates: str | None = None
) -> str:
    """``$FLWR_HOME/config.toml`` naming one SuperLink connection, the default for ``flwr``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"connection name must be a bare TOML key, got {name!r}")
    if insecure == (root_certificates is not None):
        raise ValueError(
            f"connection {name!r}: give root_certificates (TLS) or insecure=True, not both or "
            f"neither (got insecure={insecure}, root_certificates={root_certificates!r})"
        )
    security = (
        "insecure = true\n"
        if insecure
        else f"root-certificates = {toml_string(str(root_certificates))}\n"
    )
    return (
        f"[superlink]\ndefault = {toml_string(name)}\n\n[superlink.{name}]\n"
        f"address = {toml_string(address)}\n{security}"
    )


def _flwr_supernode(args: list[str], env: dict[str, str]) -> str:
    """``flwr supernode ARGS``'s output; raises with its output when it fails."""
    done = subprocess.run(
        [flower_binary("flwr"), "supernode", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if done.returncode != 0:
        raise FederationError(
            f"flwr supernode {' '.join(args)} failed ({done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-800:]}"
        )
    return done.stdout


def register_supernode(public_key: Path, connection: str, env: dict[str, str]) -> str:
    """Enroll one SuperNode key with the SuperLink (``flwr supernode register``); its node id."""
    out = _flwr_supernode(["register", str(public_key), connection, "--format", "json"], env)
    try:
        return str(json.loads(out).get("node-id", ""))
    except json.JSONDecodeError:
        return out.strip()


def unregister_supernode(node_id: int, connection: str, env: dict[str, str]) -> None:
    """Remove a node from the SuperLink (``flwr supernode unregister``): its key is void."""
    _flwr_supernode(["unregister", str(node_id), connection], env)


@contextlib.contextmanager
def _flwr_home(env: dict[str, str]) -> Iterator[None]:
    """``$FLWR_HOME`` of ``env`` for the ``flwr`` CLI code run in this process."""
    before = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = env["FLWR_HOME"]
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLWR_HOME", None)
        else:
            os.environ["FLWR_HOME"] = before


def register_supernodes(
    public_keys: Sequence[Path], connection: str, env: dict[str, str]
) -> list[str]:
    """Enroll SuperNode keys with the SuperLink; their node ids, in order.

    What ``flwr supernode register`` does (the CLI's own connection and Control API client,
    one ``RegisterNode`` call per key), in this process: one ``flwr`` interpreter per hospital
    cost about 1 s of CPU each on the cores that are starting the federation.
    """
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import RegisterNodeRequest

    with _flwr_home(env):
        client = init_http_client_from_connection(read_superlink_connection(connection))
    try:
        ids = []
        for key in public_keys:
            try:
                response = client.RegisterNode(
                    request=RegisterNodeRequest(public_key=try_load_public_key(key))
                )
            except Exception as err:
                raise FederationError(f"registering SuperNode key {key} failed: {err}") from err
            ids.append(str(response.node_id))
        return ids
    finally:
        client.close()


def submit_run(
    *,
    app_dir: Path,
    connection: str,
    name: str,
    env: dict[str, str],
    timeout_s: float,
    log_file: Path | None = None,
) -> str:
    """``flwr run APP CONNECTION --stream``: stream the run's logs and return its run id.

    Raises:
        FederationError: the run outlived ``timeout_s`` (``train_federated.run_timeout_s``) or
            ``flwr run`` failed. ``flwr run`` exits 0 when the ServerApp raises, so callers
            must still read the final status with :func:`run_status`.
    """
    cmd = [flower_binary("flwr"), "run", str(app_dir), connection, "--stream"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, _kill)
    timer.start()
    run_id = None
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", raw.rstrip())
            lines.append(line)
            match = re.search(r"Successfully started run (\d+)", line)
            if match:
                run_id = match.group(1)
            if line.strip():
                log.info("[%s] %s", name, line.strip())
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted while streaming: do not leave `flwr run` behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text("\n".join(lines) + "\n")
    if timed_out.is_set():
        err = FederationError(f"run {name!r} exceeded train_federated.run_timeout_s={timeout_s}")
        err.run_id = run_id  # a remote run may still be going
        raise err
    if proc.returncode != 0 or run_id is None:
        raise FederationError(
            f"`flwr run` for {name!r} failed (exit {proc.returncode}):\n" + "\n".join(lines[-20:])
        )
    return run_id


def stop_run(run_id: str, connection: str, env: dict[str, str]) -> None:
    """``flwr stop``: a run abandoned by its submitter must not keep the SuperNodes busy.

    Raises:
        FederationError: Flower refused or could not be reached (the caller decides whether
            that hides nothing more important).
    """
    out = subprocess.run(
        [flower_binary("flwr"), "stop", run_id, connection],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if out.returncode != 0:
        raise FederationError(f"`flwr stop {run_id}` failed: {out.stdout}{out.stderr}")


def run_status(run_id: str, connection: str, env: dict[str, str]) -> dict[str, Any]:
    """The run's row from ``flwr ls --run-id N --format json`` (``{}`` if Flower lists none)."""
    out = subprocess.run(
        [flower_binary("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    try:
        runs = json.loads(out.stdout)["runs"]
    except (json.JSONDecodeError, KeyError) as err:
        raise FederationError(
            f"cannot read status of run {run_id}: {out.stdout}{out.stderr}"
        ) from err
    return runs[0] if runs else {}
