"""Models built from public data only, cached on disk and shared by every process of a run.

DP-SGD spends privacy on every value it trains. Starting from a model pretrained on public
data (no hospital's records) leaves the hospitals to pay only for what their data adds. Such a
build is deterministic given its settings, so every process that needs it (a stage, the
ServerApp, each SuperNode, a Kubeflow pod) rebuilds or reuses it without data moving: the
folder is keyed by a hash of the settings and the code that builds it, and built once per cache
folder under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from privfed.stale import owned_prefix, remove_stale

if TYPE_CHECKING:
    from torch import nn

    from privfed.tasks.base import Task

__all__ = [
    "PublicModel",
    "built_public_model",
    "cache_key",
    "cache_root",
    "cached_build",
    "load_public_model",
    "one_thread_seeded",
    "pretrain_best",
    "state_digest",
    "write_public_model",
]

log = logging.getLogger(__name__)

#: Written last by a build: a folder holding it is complete.
DONE_FILE = "meta.json"
#: The pretrained weights in a build folder.
STATE_FILE = "public.pt"


def cache_root() -> Path:
    """``$PRIVFED_CACHE_DIR`` or ``~/.cache/privfed``: built public assets, keyed by content."""
    return Path(os.environ.get("PRIVFED_CACHE_DIR") or Path.home() / ".cache" / "privfed")


def cache_key(settings: Mapping[str, Any], modules: tuple[ModuleType, ...]) -> str:
    """16 hex digits over the settings, the builders' source code and torch's version."""
    h = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode())
    for module in modules:
        h.update(inspect.getsource(module).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@contextlib.contextmanager
def one_thread_seeded(seed: int) -> Iterator[None]:
    """Same weights on every machine run: fixed seed, one thread, global RNG restored."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def cached_build(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """``<cache>/<kind>/<key>``, built first by ``build(folder)`` (once, under a file lock).

    ``build`` writes into a temporary folder and must write :data:`DONE_FILE` last; the folder
    is renamed into place only when it returns, so a killed build leaves nothing half-written.
    """
    root = cache_root() / kind
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # SuperNodes and the ServerApp may start together
        if not (folder / DONE_FILE).is_file():
            log.info("building %s in %s (once)", kind, folder)
            remove_stale(root, f".{key}.")  # a build killed before its cleanup ran
            tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(f".{key}."), dir=root))
            try:
                build(tmp)
                if not (tmp / DONE_FILE).is_file():
                    raise RuntimeError(f"{kind} build wrote no {DONE_FILE} in {tmp}")
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class Pretrained:
    """What :func:`pretrain_best` kept: the best validation epoch's weights and score."""

    state: dict[str, torch.Tensor]
    score: float
    epoch: int


def pretrain_best(
    task: Task,
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    label: str,
) -> Pretrained:
    """Train ``model`` on public data without DP (public data costs no privacy) with Adam;
    keep the epoch with the best public-validation primary metric.

    The caller seeds (:func:`one_thread_seeded`) so every process builds the same weights.
    """
    metric, higher = task.primary_metric, task.higher_is_better
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best: Pretrained | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in DataLoader(train, batch_size=batch_size, shuffle=True):
            optimizer.zero_grad(set_to_none=True)
            task.loss(model, batch).backward()
            optimizer.step()
        score = float(task.evaluate(model, val)[metric])
        log.info("%s: epoch %d/%d public val %s=%.4f", label, epoch, epochs, metric, score)
        if best is None or (score > best.score if higher else score < best.score):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = Pretrained(state=state, score=score, epoch=epoch)
    if best is None:
        raise ValueError(f"{label}: pretraining needs at least one epoch, got {epochs}")
    return best


def write_public_model(folder: Path, best: Pretrained, meta: Mapping[str, Any]) -> None:
    """The weights, then :data:`DONE_FILE` (with their digest), as :func:`cached_build` wants."""
    torch.save(best.state, folder / STATE_FILE)
    record = {**meta, "best_epoch": best.epoch, "digest": state_digest(best.state)}
    (folder / DONE_FILE).write_text(json.dumps(record, indent=2))


class PublicModel:
    """A cached public build's weights and what the build recorded (``meta.json``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, Any] = json.loads((folder / DONE_FILE).read_text())
        self.state: dict[str, torch.Tensor] = torch.load(
            folder / STATE_FILE, map_location="cpu", weights_only=True
        )
        if state_digest(self.state) != self.meta["digest"]:
            raise ValueError(f"{folder / STATE_FILE} does not match its digest; delete {folder}")


def built_public_model(
    kind: str,
    settings: Mapping[str, Any],
    modules: tuple[ModuleType, ...],
    build: Callable[[Path], None],
) -> PublicModel:
    """The ``kind`` build for ``settings``, keyed also by the source of ``modules`` (the code
    that builds it): built once per cache folder, read once per process."""
    folder = cached_build(kind, cache_key(settings, modules), build)
    return load_public_model(str(folder))


@functools.cache
def load_public_model(folder: str) -> PublicModel:
    """Read a build folder once per process (each stage and SuperNode asks many times)."""
    return PublicModel(Path(folder))
