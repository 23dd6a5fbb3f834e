"""Crash resume for a federated run: the state after the last completed round, on disk.

After every round the ServerApp writes one file (atomically) holding the global model, the
round rows recorded so far, each hospital's DP-SGD accountant history up to that round and
the server optimizer's moments (adaptive strategies). A rerun of the stage whose run key
matches loads it and trains only the rounds that are left.

Why the DP history lives here: a resumed run is a new Flower run, so every hospital's
accountant starts empty; the server adds the checkpointed history in front of what the
hospitals report after the restart. Each step is then counted exactly once: the rounds
before the crash are not trained again, and their steps are not lost.

The folder sits outside the stage's DVC output (DVC removes outputs before it reruns a
stage) and the stage deletes it once every run of the stage has completed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfed.config import PrivFedConfig
from privfed.io import atomic_path

__all__ = [
    "ResumeState",
    "ResumeStore",
    "data_digest",
    "restore_strategy",
    "run_key",
    "strategy_state",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
#: every hospital's DP history as it reached the server, rewritten on each arrival
SPENT_FILE = "spent.json"
#: server-side strategy state: the moments of FedAdam, FedYogi and FedAdagrad; SCAFFOLD's ``c``
STRATEGY_STATE = ("m_t", "v_t", "control")
#: the same, held by Flower as a list of arrays in model order: FedAvgM's momentum
LIST_STATE = ("momentum_vector",)


@dataclass
class ResumeState:
    """Everything a run needs to go on after ``round``."""

    round: int
    arrays: dict[str, torch.Tensor]
    rows: list[dict[str, Any]]
    dp_history: dict[str, list]
    strategy: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def data_digest(folders: Iterable[Path]) -> str:
    """SHA-256 over every file's relative path and content: new data means a fresh start."""
    digest = hashlib.sha256()
    for folder in sorted(Path(f) for f in folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{folder.name}/{path.relative_to(folder)}\0".encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def run_key(cfg: PrivFedConfig, *, name: str, dp: bool, data: str = "") -> str:
    """What a checkpoint must match to be resumed: the whole config, the run and its data."""
    text = json.dumps(
        {"config": cfg.model_dump(mode="json"), "run": name, "dp": dp, "data": data},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


class ResumeStore:
    """One run's resume file, bound to the key of the run that may use it."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / STATE_FILE
        self.key = key

    def save(self, state: ResumeState) -> None:
        payload = {
            "key": self.key,
            "round": state.round,
            "arrays": {k: v.detach().cpu() for k, v in state.arrays.items()},
            # rows and histories are plain JSON: weights-only loading accepts them as a string
            "rows": json.dumps(state.rows),
            "dp_history": json.dumps(state.dp_history),
            "strategy": {name: _tensors(value) for name, value in state.strategy.items()},
        }
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    @property
    def checkpoints(self) -> Path:
        """Each completed round's checkpoint, kept beside the state."""
        return self.path.parent / "checkpoints"

    def keep_checkpoint(self, path: Path) -> None:
        """Keep a round's published checkpoint with the state (a hard link where it can).

        A killed stage's output folder is discarded; without this a resumed run would
        publish only the checkpoints of the rounds it trained itself.
        """
        kept = self.checkpoints / Path(path).name
        kept.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(kept) as tmp:
            tmp.unlink()
            try:
                os.link(path, tmp)
            except OSError:  # another file system
                shutil.copy2(path, tmp)

    def restore_checkpoints(self, folder: Path, rounds: int) -> list[Path]:
        """Put the kept checkpoints of rounds 1..``rounds`` into ``folder``; return them."""
        restored = []
        for n in range(1, rounds + 1):
            kept = self.checkpoints / f"round_{n:03d}.pt"
            if not kept.is_file():
                raise FileNotFoundError(f"resume state of round {rounds} lacks {kept}")
            target = Path(folder) / kept.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(kept, target)
            restored.append(target)
        return restored

    def save_spent(self, dp_history: Mapping[str, list]) -> None:
        """Each hospital's DP history as of its latest reply that reached the server.

        Written when a reply arrives, before the round ends: a crash mid-round then still
        knows the steps whose results left a hospital (an update the server received is
        released, whether or not the round finished).
        """
        with atomic_path(self.path.with_name(SPENT_FILE)) as tmp:
            tmp.write_text(json.dumps({"key": self.key, "dp_history": dict(dp_history)}))

    def load_spent(self) -> dict[str, list]:
        """What :meth:`save_spent` wrote for this run ({} when none, or another run's)."""
        path = self.path.with_name(SPENT_FILE)
        if not path.is_file():
            return {}
        payload = json.loads(path.read_text())
        return dict(payload["dp_history"]) if payload.get("key") == self.key else {}

    def load(self) -> ResumeState | None:
        """The saved state, or None when there is none or it belongs to another run (logged)."""
        if not self.path.is_file():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=True)
        if payload.get("key") != self.key:
            log.warning(
                "not resuming from %s: it was written by a run with other params or data; "
                "starting from round 1",
                self.path,
            )
            return None
        return ResumeState(
            round=int(payload["round"]),
            arrays=dict(payload["arrays"]),
            rows=json.loads(payload["rows"]),
            dp_history=json.loads(payload["dp_history"]),
            strategy={
                name: {k: v.numpy() for k, v in value.items()}
                for name, value in payload["strategy"].items()
            },
        )


def strategy_state(strategy: Any) -> dict[str, dict[str, np.ndarray]]:
    """The server optimizers' state (empty for stateless strategies and None); a list (FedAvgM's
    momentum) is saved keyed by position."""
    state = {
        name: dict(value)
        for name in STRATEGY_STATE
        if isinstance(value := getattr(strategy, name, None), dict)
    }
    for name in LIST_STATE:
        if isinstance(value := getattr(strategy, name, None), list):
            state[name] = {str(i): np.asarray(a) for i, a in enumerate(value)}
    return state


def restore_strategy(strategy: Any, saved: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    for name, value in saved.items():
        if name in LIST_STATE:
            setattr(strategy, name, [value[k] for k in sorted(value, key=int)])
        else:
            setattr(strategy, name, dict(value))
