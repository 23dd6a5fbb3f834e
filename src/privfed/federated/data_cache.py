"""What a hospital's ClientApp tasks compute again and again, kept: each task is a fresh fork.

The warm executor forks a new process for every message, so whatever a task loads dies with
it, and every round used to re-read and re-featurize the same partition (about 1 s per round
per hospital on the default profile; BENCHMARKS.md, figure 1). With ``$PRIVFED_DATA_CACHE``
set (the local launcher sets it to a folder in its private work directory, removed with it),
:func:`load_split` keeps each split's dataset there, keyed by everything it was made from:
the split's absolute path, the name, size and modification time of every file under it, the
task and the whole run config. Anything that changes the data or the featurization is a new
key, so a stale entry is never used. Unset, every call loads from the partition as before.

:func:`memo` does the same for a pure computation, keyed by its name and arguments: the DP
noise multiplier calibrated to ``privacy.target_epsilon`` (the PRV accountant's search takes
about 5 s of CPU, and every hospital of a tiny test federation asks for the same one at once:
the first computes it under a file lock while the others wait, then read it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["DATA_CACHE_ENV", "cache_key", "load_split", "memo"]

log = logging.getLogger(__name__)

#: The folder a local federation's ClientApps keep featurized splits in (unset: no cache).
DATA_CACHE_ENV = "PRIVFED_DATA_CACHE"


def cache_key(split: Path, task_name: str, config_json: str) -> str:
    """Digest of the split's files (names, sizes, mtimes), the task and the run config."""
    split = split.resolve()
    files = sorted(
        (p.relative_to(split).as_posix(), st.st_size, st.st_mtime_ns)
        for p in split.rglob("*")
        if p.is_file() and (st := p.stat())
    )
    blob = json.dumps([str(split), files, task_name, config_json], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def load_split(task: Any, split: Path, config_json: str) -> Any:
    """``task.load_dataset([split])``, from the cache when this exact input was loaded before."""
    root = os.environ.get(DATA_CACHE_ENV)
    if not root:
        return task.load_dataset([split])
    path = Path(root) / f"{cache_key(split, task.name, config_json)}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=False)  # written by this federation only
        except Exception as err:  # a torn or foreign file: load from the partition instead
            log.warning("ignoring unreadable data cache entry %s: %s", path, err)
    data = task.load_dataset([split])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)  # atomic: a concurrent reader sees all of it or nothing
    except Exception as err:  # e.g. a dataset that cannot be pickled: just do not cache it
        log.info("not caching %s's split %s: %s", task.name, split, err)
        Path(tmp).unlink(missing_ok=True)
    return data


def memo(kind: str, params: dict[str, Any], compute: Callable[[], float]) -> float:
    """``compute()``, once per ``(kind, params)`` in this federation's cache (a JSON number)."""
    root = os.environ.get(DATA_CACHE_ENV)
    if not root:
        return compute()
    blob = json.dumps([kind, params], sort_keys=True, separators=(",", ":"))
    path = Path(root) / f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on error
        if path.is_file():
            return float(json.loads(path.read_text())["value"])
        value = float(compute())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"params": params, "value": value}))
        os.replace(tmp, path)
        return value
