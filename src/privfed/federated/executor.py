"""Warm ClientApp executor for ``flower-supernode --isolation process``.

Stock Flower 1.41 starts a fresh ``flwr-clientapp`` interpreter for every message, which
re-imports torch and privfed (3-7 s on a 2-core machine, per hospital, per message). In
``--isolation process`` mode the SuperNode leaves launching ClientApp tasks to an external
process; this is that process. It imports the heavy modules once, then for each task forks a
child that runs Flower's own ``run_clientapp`` (the exact code ``flwr-clientapp`` runs), so the
task pulls its message, runs our ClientApp and pushes the reply through Flower's Runtime API.

Before serving, the parent warms up single-threaded (``torch.set_num_threads(1)``): one tiny
forward/backward/step, with and without Opacus, plus the Parquet and metrics code paths. Their
one-time initialization (about 2.5 s per task on 2 cores) is then inherited by every child
instead of being paid per message. With one thread no OpenMP pool exists and CPU autograd runs
on the calling thread, so forking afterwards stays safe.

Usage: ``python -m privfed.federated.executor --runtime-api-address 127.0.0.1:PORT``
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable

from privfed.federated.flower_waits import shorten_pull_backoff
from privfed.federated.processes import (
    BUSY_POLL_S,
    die_with_parent,
    reap_children,
    wait_for_exit,
)
from privfed.logs import print_flower_lines_once

__all__ = ["fork_task", "serve"]

log = logging.getLogger("privfed.executor")

PRELOAD = ("privfed.federated.app", "opacus", "sklearn.metrics", "pandas", "pyarrow.parquet")
_warmed = False  # set by warm_up; an executor forked from a warm template skips it


def _parent_alive(parent_pid: int | None) -> bool:
    if parent_pid is None:
        return True
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    return True


def warm_up() -> None:
    """Run each code path a ClientApp task uses once, on tiny tensors, single-threaded; then
    freeze what is imported, so forked tasks neither collect nor copy it."""
    global _warmed
    if _warmed:
        return
    import io

    import pandas as pd
    import torch
    from opacus import PrivacyEngine
    from sklearn.metrics import f1_score, roc_auc_score
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Conv1d(3, 4, 5, padding=2),
        nn.GELU(),
        nn.Flatten(),
        nn.LayerNorm(32),
        nn.Dropout(0.1),
        nn.Linear(32, 3),
    )
    data = TensorDataset(torch.randn(16, 3, 8), torch.randint(0, 3, (16,)))
    for private in (False, True):
        module, optimizer = model, torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = DataLoader(data, batch_size=8)
        if private:
            module, optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                poisson_sampling=True,
            )
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            optimizer.step()
        if private:
            module._close()
    buffer = io.BytesIO()
    pd.DataFrame({"a": ["x", "y"], "b": [1.0, 2.0]}).to_parquet(buffer)
    buffer.seek(0)
    pd.read_parquet(buffer).groupby("a")["b"].diff()
    roc_auc_score([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    f1_score([0, 1], [0, 1], average="macro")
    # Last, once everything is imported: the imports' half a million objects out of the cyclic
    # collector's reach. A forked task's full collection would otherwise walk them all
    # (0.2-0.3 s each; Flower's Bulyan collects once per hospital's update) and copy the pages
    # it touches (Python's gc docs: freeze before fork).
    gc.collect()
    gc.freeze()
    _warmed = True


def fork_task(task: Callable[[], object]) -> int:
    """Run ``task`` in a forked child and return its pid; the child dies with this process.

    Without the parent-death signal a child outlives an executor that was killed (with its
    stage, ``kill -9``): it would retry pushing its reply to a SuperNode that is gone.
    """
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0  # child: one task, then exit without running the parent's cleanup
    try:
        die_with_parent()
        if os.getppid() != parent:  # the executor died before the signal was armed
            code = 1
        else:
            task()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        log.exception("ClientApp task failed")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(runtime_api_address: str, *, poll_interval: float, parent_pid: int | None) -> None:
    """Acquire ClientApp tasks from the SuperNode's Runtime API and run each in a forked child."""
    for module in PRELOAD:
        importlib.import_module(module)
    warm_up()
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    shorten_pull_backoff("clientapp")  # the forked tasks pull their message from the SuperNode
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    log.info("warm ClientApp executor ready on %s (pid %d)", runtime_api_address, os.getpid())
    running: set[int] = set()
    while _parent_alive(parent_pid):
        running -= reap_children("ClientApp task")
        response = client.AcquireTask(request)
        if response.HasField("task") and response.token:
            running.add(
                fork_task(
                    functools.partial(
                        run_clientapp,
                        runtime_api_address=runtime_api_address,
                        token=response.token,
                        insecure=True,
                        parent_pid=None,
                        runtime_dependency_install=False,
                    )
                )
            )
            continue  # look for the next task right away (other runs may be queued)
        if running:  # the SuperNode has no next task before this one replies
            wait_for_exit(running, BUSY_POLL_S)
        else:
            time.sleep(poll_interval)
    log.info("SuperNode %s is gone; executor exits", parent_pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per 50 ms poll otherwise
    print_flower_lines_once()  # Flower's own handler prints its lines; the root one would too
    serve(args.runtime_api_address, poll_interval=args.poll_interval, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
