"""Federated training with Flower's Deployment Engine, split by role.

* **Hospital**: :mod:`.client` (what a hospital does per message), :mod:`.secagg.hospital`.
* **Server** (the ServerApp): :mod:`.server` (one run), :mod:`.strategies` (each strategy's
  factory; the registry is :mod:`privfed.config.strategy_registry`), :mod:`.recorded` and
  :mod:`.recorder` (per-round records, screening, checkpoints around any strategy),
  :mod:`.queries` (roll call, final evaluation), :mod:`.secagg.server`; :mod:`.app` is the
  thin Flower glue both sides load.
* **Launchers** (the stage's side): :mod:`.federation` (the interface the stage calls),
  :mod:`.launcher` (local processes) and :mod:`.kubernetes` (a cluster's pods), over the Flower
  plumbing in :mod:`.flower_app`, :mod:`.flower_commands` and :mod:`.flower_control`.

Importing this package imports neither Flower nor torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ENROLLED_KEY",
    "Federation",
    "LocalFederation",
    "RunSpec",
    "LIVE_FILE",
    "ROUNDS_FILE",
    "RUN_RESULT_FILE",
]

#: Written by the ServerApp into each run's output folder.
RUN_RESULT_FILE = "run.json"
#: Rewritten by the ServerApp after each round beside ``run.json``: the rounds so far and the
#: hospitals' DP histories, which ``train_federated`` logs to MLflow as they land.
LIVE_FILE = "live.json"
#: Written by ``train_federated`` beside the runs: every run's rounds and DP histories.
ROUNDS_FILE = "rounds.json"
#: Run-config key of the enrolled nodes (JSON ``{node id: hospital}``): the launcher writes
#: it, the ServerApp refuses every other node.
ENROLLED_KEY = "enrolled-nodes"


def __getattr__(name: str) -> Any:  # lazy: importing privfed.federated must not start Flower
    if name in ("Federation", "RunSpec"):
        from privfed.federated import federation

        return getattr(federation, name)
    if name == "LocalFederation":
        from privfed.federated import launcher

        return launcher.LocalFederation
    raise AttributeError(name)
