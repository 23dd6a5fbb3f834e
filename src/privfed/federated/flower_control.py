"""The operator's side of a SuperLink: Flower's Control API, called as the ``flwr`` CLI does.

Both launchers reach the SuperLink's Control API only through these functions: which
SuperLink to talk to (``$FLWR_HOME/config.toml``, the file the ``flwr`` CLI reads), enrolling
a SuperNode's key, and submitting, following, listing and stopping runs. Hospitals never get
this path (see docs/federation.md).

Each call uses the ``flwr`` CLI's own connection reader and Control API client, in this
process. Starting a ``flwr`` interpreter per call (``flwr run`` before every run, ``flwr ls``
after it) cost about 1 s of CPU each on the critical path of every run (BENCHMARKS.md,
figure 1, "run start").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from privfed.federated.federation import FederationError
from privfed.federated.flower_commands import toml_string

__all__ = [
    "control_client",
    "flwr_connection_toml",
    "register_supernode",
    "register_supernodes",
    "run_status",
    "stop_run",
    "submit_run",
    "unregister_supernode",
]

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


@contextlib.contextmanager
def control_client(connection: str, env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """The ``flwr`` CLI's Control API client for ``connection``, and the connection itself."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection

    with _flwr_home(env):
        try:
            superlink = read_superlink_connection(connection)
            client = init_http_client_from_connection(superlink)
        except Exception as err:
            raise FederationError(
                f"cannot reach SuperLink connection {connection!r} "
                f"({env['FLWR_HOME']}/config.toml): {err}"
            ) from err
    try:
        yield client, superlink
    finally:
        client.close()


def _call(what: str, rpc: Callable[[], Any]) -> Any:
    """One Control API call; Flower's and the transport's errors as a FederationError."""
    try:
        return rpc()
    except Exception as err:
        raise FederationError(f"{what} failed: {type(err).__name__}: {err}") from err


def register_supernodes(
    public_keys: Sequence[Path], connection: str, env: dict[str, str]
) -> list[str]:
    """Enroll SuperNode keys with the SuperLink (``flwr supernode register``); their node ids."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.proto.control_pb2 import RegisterNodeRequest

    ids = []
    with control_client(connection, env) as (client, _):
        for key in public_keys:
            request = RegisterNodeRequest(public_key=try_load_public_key(key))
            response = _call(
                f"registering SuperNode key {key}", lambda r=request: client.RegisterNode(r)
            )
            ids.append(str(response.node_id))
    return ids


def register_supernode(public_key: Path, connection: str, env: dict[str, str]) -> str:
    """Enroll one SuperNode key with the SuperLink; its node id."""
    return register_supernodes([public_key], connection, env)[0]


def unregister_supernode(node_id: int, connection: str, env: dict[str, str]) -> None:
    """Remove a node from the SuperLink (``flwr supernode unregister``): its key is void."""
    from flwr.proto.control_pb2 import UnregisterNodeRequest

    with control_client(connection, env) as (client, _):
        _call(
            f"unregistering SuperNode {node_id}",
            lambda: client.UnregisterNode(UnregisterNodeRequest(node_id=node_id)),
        )


def _start_run(client: Any, superlink: Any, app_dir: Path, name: str) -> str:
    """Build the App's FAB and start a run with it (what ``flwr run APP`` does); the run id."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    fab_bytes = build_fab_from_disk(app_dir)
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    request = StartRunRequest(
        fab=fab_to_proto(fab),
        override_config=user_config_to_proto({}),
        federation=superlink.federation or "",
    )
    response = _call(f"starting run {name!r}", lambda: client.StartRun(request))
    if not response.HasField("run_id"):
        raise FederationError(f"the SuperLink started no run for {name!r}: {response}")
    return str(response.run_id)


def _follow_logs(client: Any, run_id: str, name: str, lines: list[str]) -> None:
    """Log the run's output as it streams (``flwr run --stream``); returns when it finishes."""
    from flwr.proto.control_pb2 import StreamLogsRequest

    request = StreamLogsRequest(run_id=int(run_id), after_timestamp=0.0)
    for response in client.StreamLogs(request):
        for raw in response.log_output.splitlines():
            line = _ANSI.sub("", raw.rstrip())
            lines.append(line)
            if line.strip():
                log.info("[%s] %s", name, line.strip())


def submit_run(
    *,
    app_dir: Path,
    connection: str,
    name: str,
    env: dict[str, str],
    timeout_s: float,
    log_file: Path | None = None,
) -> str:
    """Start a run of the App in ``app_dir``, stream its logs until it ends; its run id.

    Raises:
        FederationError: the run could not start, outlived ``timeout_s``
            (``train_federated.run_timeout_s``) or its log stream broke; the error's
            ``run_id`` names a run that may still be going. A ServerApp that raised still
            ends the stream normally: callers read the final status with :func:`run_status`.
    """
    lines: list[str] = []
    failure: list[BaseException] = []
    run_id: str | None = None
    try:
        with control_client(connection, env) as (client, superlink):
            run_id = _start_run(client, superlink, app_dir, name)
            log.info("[%s] started run %s", name, run_id)

            def follow() -> None:
                try:
                    _follow_logs(client, str(run_id), name, lines)
                except BaseException as err:  # handed to the caller below
                    failure.append(err)

            follower = threading.Thread(target=follow, name=f"logs-{name}", daemon=True)
            follower.start()
            follower.join(timeout_s)
            if follower.is_alive():
                raise FederationError(
                    f"run {name!r} exceeded train_federated.run_timeout_s={timeout_s}"
                )
            if failure:
                raise FederationError(
                    f"following the logs of run {name!r} (id {run_id}) failed: "
                    f"{type(failure[0]).__name__}: {failure[0]}"
                ) from failure[0]
    except FederationError as err:
        err.run_id = run_id  # a remote run may still be going
        raise
    finally:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text("\n".join(lines) + "\n")
    return run_id


def stop_run(run_id: str, connection: str, env: dict[str, str]) -> None:
    """``flwr stop``: a run abandoned by its submitter must not keep the SuperNodes busy.

    Raises:
        FederationError: Flower refused or could not be reached (the caller decides whether
            that hides nothing more important).
    """
    from flwr.proto.control_pb2 import StopRunRequest

    with control_client(connection, env) as (client, _):
        response = _call(
            f"stopping run {run_id}", lambda: client.StopRun(StopRunRequest(run_id=int(run_id)))
        )
    if not response.success:
        raise FederationError(f"the SuperLink did not stop run {run_id}")


def run_status(run_id: str, connection: str, env: dict[str, str]) -> dict[str, Any]:
    """The run's row as ``flwr ls --run-id N --format json`` prints it (``{}`` if none)."""
    from flwr.cli.ls import _to_json  # the CLI's own row format (flwr is pinned to 1.41.*)
    from flwr.cli.run_utils import format_runs
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest

    with control_client(connection, env) as (client, _):
        response = _call(
            f"reading the status of run {run_id}",
            lambda: client.ListRuns(ListRunsRequest(run_id=int(run_id))),
        )
    rows = format_runs([run_from_proto(p) for p in response.run_dict.values()], response.now)
    runs = json.loads(_to_json(rows))["runs"]
    return runs[0] if runs else {}
