"""The local launcher's child processes: started with a log each, watched, always stopped.

Each child runs in its own session, so a Ctrl-C reaches the stage first and it stops them in
order, and is killed by the kernel if the stage dies outright (:func:`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from privfed.federated.federation import FederationError

__all__ = [
    "BUSY_POLL_S",
    "ProcessGroup",
    "die_with_parent",
    "exited_children",
    "free_port",
    "reap_children",
    "wait_for_exit",
]

log = logging.getLogger(__name__)

#: prctl(2) option: the signal a child gets when the thread that started it dies
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in each child before exec: SIGKILL it when the stage process dies.

    Without it, a stage killed outright (OOM, ``kill -9``) would leave its SuperLink and
    SuperNodes running with nobody to stop them.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def exited_children() -> Iterator[tuple[int, int]]:
    """``(pid, exit code)`` of every child that has exited, collected without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def reap_children(what: str) -> set[int]:
    """Collect every exited child without blocking; log the ones that failed (``what`` they ran).

    Returns the pids collected.
    """
    reaped: set[int] = set()
    for pid, code in exited_children():
        reaped.add(pid)
        if code != 0:
            log.warning("%s process %d exited with %d", what, pid, code)
    return reaped


#: A warm executor's acquire poll while a task of its own runs: a safety net only, it is woken
#: by the task's exit (:func:`wait_for_exit`).
BUSY_POLL_S = 1.0


def wait_for_exit(pids: set[int], timeout: float) -> None:
    """Sleep at most ``timeout`` seconds, waking as soon as any child in ``pids`` exits.

    A warm executor uses it while its task runs instead of polling for the next task: Flower
    hands a SuperNode's tasks out one at a time, so none can come before this one replies. The
    executor's 20 requests a second cost CPU the hospitals' training needed (BENCHMARKS.md,
    figure 1). Waits on pidfds (Linux 5.3+); plain sleep where there are none.
    """
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:  # already collected: nothing to wait for
                return
        select.select(fds, [], [], timeout)
    except (AttributeError, OSError):  # no pidfd_open here
        time.sleep(timeout)
    finally:
        for fd in fds:
            os.close(fd)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessGroup:
    """Named child processes, each logging to ``<log_dir>/<name>.log``.

    ``procs`` lists ``(name, Popen)`` in start order. A name in ``expendable`` may exit without
    failing the group (e.g. a SuperNode the SuperLink is meant to refuse).
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.expendable: set[str] = set()

    def start(self, name: str, args: list[str], *, stdin: int | None = None) -> subprocess.Popen:
        """Start ``args`` as ``name``; ``stdin=subprocess.PIPE`` keeps a pipe to it."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=die_with_parent,  # prctl only: safe between fork and exec
        )
        logfile.close()
        self.procs.append((name, proc))
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(args))
        return proc

    def get(self, name: str) -> subprocess.Popen | None:
        """The process started as ``name`` (None if there is none)."""
        return dict(self.procs).get(name)

    def retire(self, name: str) -> Path:
        """Stop ``name`` (if it still runs) and forget it; its log is kept, renamed.

        Returns the kept log, ``<name>.exited-<n>.log``, so that a restarted process of the
        same name does not write over the record of why the first one died.
        """
        proc = self.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.procs = [(n, p) for n, p in self.procs if n != name]
        log_file = self.log_dir / f"{name}.log"
        kept = (
            self.log_dir / f"{name}.exited-{len(list(self.log_dir.glob(f'{name}.exited-*')))}.log"
        )
        if log_file.is_file():
            log_file.rename(kept)
        return kept

    def exited(self, name: str, proc: subprocess.Popen) -> FederationError:
        """The error that says ``name`` exited, with its code and the end of its log."""
        return FederationError(
            f"{name} exited with code {proc.returncode}; last log lines:\n" + self.tail(name)
        )

    def check_alive(self) -> None:
        """Raise if a process that must keep running has exited."""
        for name, proc in self.procs:
            if proc.poll() is not None and name not in self.expendable:
                raise self.exited(name, proc)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of ``name``'s log."""
        path = self.log_dir / f"{name}.log"
        if not path.is_file():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_port(self, port: int, timeout: float) -> None:
        """Until something listens on ``port``; raise if a process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise FederationError(f"SuperLink did not open port {port} within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM all, wait up to 10 s in all, then SIGKILL whatever is left."""
        for _, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM; killing it", name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):  # go on with the others
                    proc.wait(timeout=5)
        self.procs.clear()
