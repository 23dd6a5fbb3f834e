"""``flower-supernode`` with its idle waits capped: the fixed per-round latency fix.

flwr 1.41's SuperNode sleeps a hard-coded 3 s whenever a pull finds no message
(``flwr/supernode/start_client_internal.py``) and polls for its ClientApp's reply every 0.5 s,
with no setting for either. A round therefore waits up to 3 s before a hospital even sees the
new global model. py-spy put 58 % of a SuperNode's time in that sleep (BENCHMARKS.md, figure 1).
This entry point runs Flower's own SuperNode CLI with the ``time`` module of that loop replaced
by one whose ``sleep`` is capped, so nothing else in Flower changes:

    python -m privfed.federated.supernode --idle-poll 0.2 [--local-poll 0.01] <flower args>

The loop's waits are of two kinds. The 3 s one follows a pull from the SuperLink that found
nothing: each retry is a request over the network, so it is capped at ``--idle-poll``. The
0.5 s ones wait for something in the SuperNode's own memory (its ClientApp's reply, an object
the ClientApp is still pushing): checking costs microseconds, so they are capped at
``--local-poll`` (default: the same as ``--idle-poll``), which takes their average 0.1 s
overshoot off every round's critical path.

flwr is pinned to 1.41.*; ``train_federated.supernode_poll_s: null`` starts the stock binary.
"""

from __future__ import annotations

import sys
import time as _time
from typing import Any

from privfed.federated.flower_waits import shorten_pull_backoff

__all__ = ["CappedSleep", "main"]


#: Flower's waits shorter than this are in-memory polls (0.5 s), longer ones network (3 s).
LOCAL_WAIT_BELOW_S = 1.0


class CappedSleep:
    """Stands in for the ``time`` module inside the SuperNode loop: sleeps at most ``cap``.

    Waits shorter than :data:`LOCAL_WAIT_BELOW_S` (Flower's in-memory polls) are capped at
    ``local_cap`` instead, when given.
    """

    def __init__(self, cap: float, local_cap: float | None = None) -> None:
        if not cap > 0:
            raise ValueError(f"--idle-poll must be > 0 seconds, got {cap!r}")
        if local_cap is not None and not local_cap > 0:
            raise ValueError(f"--local-poll must be > 0 seconds, got {local_cap!r}")
        self.cap = cap
        self.local_cap = cap if local_cap is None else local_cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self.cap if seconds >= LOCAL_WAIT_BELOW_S else self.local_cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--idle-poll"] or len(argv) < 2:
        raise SystemExit(
            "usage: python -m privfed.federated.supernode --idle-poll S [--local-poll S] <args>"
        )
    idle, argv = float(argv[1]), argv[2:]
    local = None
    if argv[:1] == ["--local-poll"] and len(argv) >= 2:
        local, argv = float(argv[1]), argv[2:]
    cap = CappedSleep(idle, local)
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = cap  # type: ignore[assignment]
    shorten_pull_backoff("supernode")  # its pulls of a message's objects from the SuperLink
    sys.argv = ["flower-supernode", *argv]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
