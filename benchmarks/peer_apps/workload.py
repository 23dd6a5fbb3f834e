"""The work every peer framework runs in `python -m benchmarks peers`: torch and the stdlib only.

`benchmarks/peers.py` exports one workload folder from PrivFed's own data and model (the pickled
initial model, each hospital's train and validation tensors, the plan); the Flower-simulation and
NVIDIA FLARE apps in this folder run in their own virtual environments and call only this module,
so each framework trains exactly the same model on the same tensors with the same local pass as
PrivFed's ClientApp: validate the received model, then ``epochs`` epochs of Adam at ``lr`` over
shuffled batches, one torch thread per hospital.

Each hospital appends one JSON line per round to ``timeline-<runner>.jsonl``: when its client
code got the model and when it handed the update back, so that the benchmark computes every
runner's round time and its non-training overhead the same way.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["Workload", "WorkloadModel", "initial_model", "load_workload"]


def _plan(folder: Path) -> dict[str, Any]:
    """The workload's plan; puts PrivFed's source tree (``plan["src"]``) on ``sys.path``.

    The model's class lives there; only its module (torch-only) is imported, so the peer
    environments need neither PrivFed nor its dependencies. The path comes from the plan, not
    from this file's location, because NVIDIA FLARE copies this file into its job folders.
    """
    plan = json.loads((folder / "plan.json").read_text())
    if plan["src"] not in sys.path:
        sys.path.insert(0, plan["src"])
    return plan


def initial_model(folder: Path) -> nn.Module:
    """The exported initial model (its class comes from PrivFed's source tree)."""
    _plan(folder)
    return torch.load(folder / "model.pt", weights_only=False)


class WorkloadModel(nn.Module):
    """The workload's model, built from the folder alone.

    NVIDIA FLARE's job config rebuilds the server's initial model from a class path and the
    constructor arguments it finds as attributes; this wrapper's one argument is the folder.
    Its parameters are the exported model's, under ``net.``.
    """

    def __init__(self, workload: str) -> None:
        super().__init__()
        self.workload = workload
        self.net = initial_model(Path(workload))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)


class Workload:
    """One hospital's share of the exported workload."""

    def __init__(self, folder: Path, hospital: int | str) -> None:
        self.folder = folder
        self.plan = _plan(folder)
        self.hospital = hospital if isinstance(hospital, str) else self.plan["hospitals"][hospital]
        data = torch.load(folder / f"{self.hospital}.pt", weights_only=True)
        self.train = TensorDataset(*data["train"])
        self.val = TensorDataset(*data["val"])
        torch.set_num_threads(1)  # as PrivFed's ClientApp: hospitals share the machine's cores

    def initial_model(self) -> nn.Module:
        return initial_model(self.folder)

    def local_round(self, model: nn.Module, server_round: int) -> dict[str, float]:
        """Validate the received model, then train it in place; the numbers to send back."""
        val_loss = self._val_loss(model)
        generator = torch.Generator().manual_seed(self.plan["seed"] + 1000 * server_round)
        loader = DataLoader(
            self.train, batch_size=self.plan["batch_size"], shuffle=True, generator=generator
        )
        optimizer = torch.optim.Adam(
            model.parameters(), lr=self.plan["lr"], weight_decay=self.plan["weight_decay"]
        )
        model.train()
        total, seen, steps = 0.0, 0, 0
        for _ in range(self.plan["epochs"]):
            for *inputs, labels in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(*inputs), labels)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(labels)
                seen += len(labels)
                steps += 1
        return {
            "train_loss": total / max(seen, 1),
            "val_loss": val_loss,
            "n": len(self.train),
            "steps": steps,
        }

    @torch.no_grad()
    def _val_loss(self, model: nn.Module) -> float:
        model.eval()
        total = 0.0
        for *inputs, labels in DataLoader(self.val, batch_size=256):
            total += nn.functional.cross_entropy(model(*inputs), labels, reduction="sum").item()
        return total / max(len(self.val), 1)

    def record(self, runner: str, server_round: int, t_start: float, **extra: float) -> None:
        """One line of ``timeline-<runner>.jsonl`` (appends are atomic for short lines)."""
        line = {
            "hospital": self.hospital,
            "round": server_round,
            "t_start": t_start,
            "t_end": time.time(),
            "pid": os.getpid(),
            **extra,
        }
        with open(self.folder / f"timeline-{runner}.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")


@functools.cache
def load_workload(folder: str | Path, hospital: int | str) -> Workload:
    """The hospital's workload, loaded once per process (as PrivFed's warm executor caches it)."""
    return Workload(Path(folder), hospital)
