"""Federated training with Flower's Deployment Engine.

``client``/``server`` hold the logic (plain functions over records); ``app`` is the thin Flower
glue that the SuperLink and SuperNodes load; ``launcher`` starts a local federation of real
processes on 127.0.0.1 and submits runs to it.
"""

from __future__ import annotations

__all__ = ["LocalFederation", "RunSpec", "ROUNDS_FILE", "RUN_RESULT_FILE"]

#: Written by the ServerApp into each run's output folder.
RUN_RESULT_FILE = "run.json"
#: Written by ``train_federated`` beside the runs: every run's rounds and DP histories.
ROUNDS_FILE = "rounds.json"


def __getattr__(name: str):  # lazy: importing privfed.federated must not start Flower
    if name in ("LocalFederation", "RunSpec"):
        from privfed.federated import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
