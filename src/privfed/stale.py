"""Temporary state named after the process that owns it, and removed once that process is dead.

A stage killed outright (``kill -9``, OOM) runs no cleanup: its temporary folders (a
federation's TLS key and hospital keys, a half-written output folder) would stay forever. So
each is named ``<prefix><pid>-<start>.<random>``, where ``<start>`` is the owner's start time,
and the next run that uses the same prefix removes every such entry whose owner no longer
runs. The start time tells a reused pid from the owner: a live process with the same pid but
another start time is not the owner either.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

__all__ = ["owned_prefix", "owned_tempdir", "owner_alive", "remove_stale"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"(\d+)-(\d+)\.")


def _start(pid: int) -> int | None:
    """The process's start time in centiseconds since the epoch (None when it does not run)."""
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def owned_prefix(prefix: str) -> str:
    """``prefix`` followed by this process's owner token: pass it to mkdtemp or mkstemp."""
    pid = os.getpid()
    return f"{prefix}{pid}-{_start(pid)}."


def owner_alive(pid: int, start: int) -> bool:
    """Whether the process that made an entry still runs (same pid, same start time)."""
    now = _start(pid)
    # create_time is derived from clock ticks and the boot time: allow one centisecond
    return now is not None and abs(now - start) <= 1


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove ``folder``'s entries named by :func:`owned_prefix` whose owner is dead.

    Entries without an owner token (another program's, or older ones) are left alone.
    """
    removed: list[Path] = []
    if not Path(folder).is_dir():
        return removed
    for entry in sorted(Path(folder).glob(f"{glob.escape(prefix)}*")):
        match = _TOKEN.match(entry.name[len(prefix) :])
        if match is None or owner_alive(int(match[1]), int(match[2])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        log.warning(
            "removed %s: left by process %s, which died before cleaning up", entry, match[1]
        )
        removed.append(entry)
    return removed


@contextmanager
def owned_tempdir(prefix: str) -> Iterator[Path]:
    """A private temporary folder, removed on exit; a killed owner's is removed by the next use.

    For state that must not outlive its run, such as a federation's TLS and SuperNode keys.
    """
    root = Path(tempfile.gettempdir())
    remove_stale(root, prefix)
    with tempfile.TemporaryDirectory(prefix=owned_prefix(prefix)) as work:
        yield Path(work)
