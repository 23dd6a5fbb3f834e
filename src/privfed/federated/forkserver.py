"""One warm template process that forks the local federation's executors: imports paid once.

Each warm executor (a hospital's ClientApp executor, :mod:`privfed.federated.executor`; the
ServerApp executor, :mod:`privfed.federated.serverapp_executor`) used to be its own
interpreter importing torch, Opacus, pandas, Flower and privfed and warming them up: 4-5 s of
CPU each, N + 1 times over on the 2 cores that also start the SuperLink and SuperNodes, and
the last of them to be ready was the federation's start-up time (BENCHMARKS.md, figure 1).
The local launcher now starts this template first, beside the SuperLink; it imports and warms
up once, then reads one JSON request per line on stdin and forks the process each names:

    {"name": "executor-hospital_1", "module": "privfed.federated.executor",
     "argv": ["--runtime-api-address", "127.0.0.1:PORT"], "log": "/abs/executor-h1.log"}

The child writes to its own log, sees its own ``sys.argv`` (as if started with
``python -m MODULE ARGV``) and calls that module's ``main(ARGV)``. Children die with the template
(``PR_SET_PDEATHSIG``), and the template with the stage (the launcher's process group). A
child that exits non-zero ends the template with its code, so the launcher's liveness checks
report the failure; an executor whose SuperNode is gone exits 0 (a dropout is not a failure).
Each hospital still has its own executor process and its own forked task per message, exactly
as with separately started executors; only the imports are shared (copy-on-write pages).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import sys
from typing import Any

from privfed.federated.processes import die_with_parent, exited_children

__all__ = ["main", "request_line"]

log = logging.getLogger("privfed.forkserver")

#: Imported here besides the executor's own preloads: what the forked executors and the
#: ServerApps they fork import next (Flower's ClientApp/ServerApp runtimes; SQLAlchemy and
#: alembic come with the ServerApp's): about 1 s per process otherwise.
PRELOAD = (
    "privfed.federated.serverapp_executor",
    "flwr.supernode.runtime.run_clientapp",
    "flwr.superlink.runtime.run_serverapp",
    "flwr.supercore.runtime",
)


def request_line(name: str, module: str, argv: list[str], log_file: str) -> bytes:
    """One request for the template's stdin."""
    return (
        json.dumps({"name": name, "module": module, "argv": argv, "log": log_file}) + "\n"
    ).encode()


def _preload_tasks() -> None:
    """The config schema and every registered task's module: each task imported them again.

    ``resolved_config`` composes its schema from every task's settings, and ``get_task``
    imports the task's module: cached per process, so each forked task paid them anew
    (about 0.2 s per message on a loaded machine, py-spy). All built-in tasks take ~0.3 s.
    """
    from privfed.config import config_model
    from privfed.tasks import registry_key

    config_model()
    for entry in registry_key():
        importlib.import_module(entry.task.split(":")[0])


def _child(request: dict[str, Any]) -> int:
    """In the forked child: redirect output to the request's log and run its module's main."""
    die_with_parent()
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the template's stdin is the launcher's pipe: not the child's
    os.close(devnull)
    sys.argv = [f"-m {request['module']}", *request["argv"]]  # what ps and audit hooks see
    try:
        importlib.import_module(request["module"]).main(request["argv"])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        logging.getLogger(request["module"]).exception("%s failed", request["name"])
        return 1
    return 0


def _reap(children: dict[int, str]) -> int | None:
    """Collect exited children; the first non-zero exit code, if any."""
    failed = None
    if not children:
        return None
    for pid, code in exited_children():
        name = children.pop(pid, f"pid {pid}")
        if code != 0:
            log.error("%s (pid %d) exited with %d", name, pid, code)
            failed = failed or code
        else:
            log.info("%s (pid %d) exited", name, pid)
    return failed


def main(argv: list[str] | None = None) -> None:
    """``python -m privfed.federated.forkserver [MODULE ...]``: the run's task's
    :attr:`~privfed.tasks.base.Task.runtime_imports` are the arguments."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from privfed.federated import executor

    task_modules = sys.argv[1:] if argv is None else argv
    for module in (*executor.PRELOAD, *PRELOAD):
        importlib.import_module(module)
    _preload_tasks()
    for module in task_modules:
        importlib.import_module(module)
    executor.warm_up()  # single-threaded and frozen; every forked executor inherits it
    log.info("warm template ready (pid %d; task modules: %s)", os.getpid(), task_modules)
    children: dict[int, str] = {}
    stdin = sys.stdin.buffer
    pending = b""
    open_ = True
    while open_ or children:
        failed = _reap(children)
        if failed:
            sys.exit(failed)
        if not open_:
            select.select([], [], [], 0.5)
            continue
        ready, _, _ = select.select([stdin], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(stdin.fileno(), 65536)
        if not chunk:
            open_ = False  # the launcher is done asking; serve the children until they end
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(request)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children[pid] = request["name"]
            log.info("started %s (pid %d)", request["name"], pid)


if __name__ == "__main__":
    main()
