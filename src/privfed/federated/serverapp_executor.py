"""Warm ServerApp executor for ``flower-superlink --isolation process``.

Stock Flower 1.41 has its SuperExec start a fresh ``flwr-serverapp`` interpreter for every run,
which imports torch, Flower and privfed again (3-7 s on a 2-core machine, on the critical path
of every run: nothing happens between ``flwr run`` and the ServerApp's first message). With
``--isolation process`` the SuperLink leaves launching ServerApps to an external process; this
is that process, the ServerApp twin of :mod:`privfed.federated.executor`. It imports the heavy
modules once, next to the SuperLink, and for each run forks a child that runs Flower's own
``run_serverapp`` (the code ``flwr-serverapp`` runs) with the run's token, its output mirrored
into the run's log stream as ``flwr-serverapp`` does.

Usage: ``python -m privfed.federated.serverapp_executor --runtime-api-address 127.0.0.1:PORT
(--root-certificates CA.pem | --insecure) [--parent-pid PID]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from privfed.federated.processes import die_with_parent, reap_children
from privfed.logs import print_flower_lines_once

__all__ = ["serve"]

log = logging.getLogger("privfed.serverapp_executor")


def _run_one(runtime_api_address: str, token: str, certificates: bytes | None) -> int:
    """In the forked child: what ``flwr-serverapp`` does with its token; the exit code."""
    from queue import Queue

    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.superlink.runtime import run_serverapp

    die_with_parent()  # the executor's children never outlive it
    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)
    try:
        run_serverapp(
            runtime_api_address=runtime_api_address,
            log_queue=log_queue,
            token=token,
            insecure=certificates is None,
            certificates=certificates,
            parent_pid=None,
            runtime_dependency_install=False,
        )
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        log.exception("ServerApp failed")
        return 1
    finally:
        restore_output()
    return 0


def serve(
    runtime_api_address: str,
    *,
    certificates: bytes | None,
    poll_interval: float,
    parent_pid: int | None,
) -> None:
    """Acquire ServerApp tasks from the SuperLink's Runtime API; run each in a forked child."""
    import torch
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    import privfed.federated.app  # noqa: F401 - the ServerApp and everything it imports

    torch.set_num_threads(1)  # no OpenMP pool before fork (see privfed.federated.executor)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=certificates is None,
        root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.SERVER_APP])
    log.info("warm ServerApp executor ready on %s (pid %d)", runtime_api_address, os.getpid())
    while parent_pid is None or os.getppid() == parent_pid:
        reap_children("ServerApp")
        response = client.AcquireTask(request)
        if response.HasField("task") and response.token:
            pid = os.fork()
            if pid == 0:  # child: one run, then exit without running the parent's cleanup
                code = 1
                try:
                    code = _run_one(runtime_api_address, response.token, certificates)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            log.info("ServerApp of run %d started (pid %d)", response.task.run_id, pid)
            continue
        time.sleep(poll_interval)
    log.info("the SuperLink's launcher (pid %s) is gone; executor exits", parent_pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    security = parser.add_mutually_exclusive_group(required=True)
    security.add_argument("--root-certificates", type=Path)
    security.add_argument("--insecure", action="store_true")
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    print_flower_lines_once()
    serve(
        args.runtime_api_address,
        certificates=None if args.insecure else args.root_certificates.read_bytes(),
        poll_interval=args.poll_interval,
        parent_pid=args.parent_pid,
    )


if __name__ == "__main__":
    main()
