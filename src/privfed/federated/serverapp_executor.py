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
import importlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from queue import Queue
from typing import Any

from privfed.federated.flower_waits import shorten_pull_backoff
from privfed.federated.processes import (
    BUSY_POLL_S,
    die_with_parent,
    reap_children,
    wait_for_exit,
)
from privfed.logs import print_flower_lines_once

__all__ = ["serve"]

log = logging.getLogger("privfed.serverapp_executor")


def flush_when_pushed(module: Any) -> None:
    """Make ``module``'s ``flush_logs`` wait for the log uploader, not for a fixed 1 s.

    Before a ServerApp reports its final status, flwr 1.41's ``run_serverapp`` flushes the
    run's log with ``flush_logs``: it waits until the log queue is empty and then sleeps 1 s
    "to allow the PushLogs call to complete", on the critical path of every run (the final
    status is what ends the submitter's log stream). This ends the uploader instead, as
    ``stop_log_uploader`` does later anyway: the uploader pushes every line queued before the
    end marker and exits, so the join returns as soon as the last ``PushLogs`` has completed
    (within the uploader's 0.2 s upload interval). Lines written after the flush are no
    different from before: they follow the final status, and the log stream has ended then.
    """
    uploaders: list[threading.Thread] = []
    start_uploader = module.start_log_uploader

    def start_and_keep(*args: Any, **kwargs: Any) -> threading.Thread:
        thread = start_uploader(*args, **kwargs)
        uploaders.append(thread)
        return thread

    def flush(log_queue: Queue[str | None], timeout: float = 3.0) -> bool:
        log_queue.put(None)  # the uploader's end marker
        deadline = time.monotonic() + timeout
        for thread in uploaders:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in uploaders)

    module.start_log_uploader = start_and_keep
    module.flush_logs = flush


def _run_one(runtime_api_address: str, token: str, certificates: bytes | None) -> int:
    """In the forked child: what ``flwr-serverapp`` does with its token; the exit code."""
    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.superlink.runtime import run_serverapp

    die_with_parent()  # the executor's children never outlive it
    # the package re-exports the function under the module's name: fetch the module itself
    flush_when_pushed(importlib.import_module("flwr.superlink.runtime.run_serverapp"))
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

    shorten_pull_backoff("serverapp")  # the ServerApps' grids pull the hospitals' replies
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
    running: set[int] = set()
    while parent_pid is None or os.getppid() == parent_pid:
        running -= reap_children("ServerApp")
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
            running.add(pid)
            continue
        if running:  # a run is going: poll the SuperLink at 1 Hz, wake when it ends
            wait_for_exit(running, BUSY_POLL_S)
        else:
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
