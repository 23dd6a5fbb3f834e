"""``flower-supernode`` with its idle waits capped: the fixed per-round latency fix.

flwr 1.41's SuperNode sleeps a hard-coded 3 s whenever a pull finds no message
(``flwr/supernode/start_client_internal.py``) and polls for its ClientApp's reply every 0.5 s,
with no setting for either. A round therefore waits up to 3 s before a hospital even sees the
new global model. py-spy put 58 % of a SuperNode's time in that sleep (BENCHMARKS.md, figure 1).
This entry point runs Flower's own SuperNode CLI with the ``time`` module of that loop replaced
by one whose ``sleep`` is capped, so nothing else in Flower changes:

    python -m privfed.federated.supernode --idle-poll 0.2 <flower-supernode arguments>

flwr is pinned to 1.41.*; ``train_federated.supernode_poll_s: null`` starts the stock binary.
"""

from __future__ import annotations

import sys
import time as _time
from typing import Any

__all__ = ["CappedSleep", "main"]


class CappedSleep:
    """Stands in for the ``time`` module inside the SuperNode loop: sleeps at most ``cap``."""

    def __init__(self, cap: float) -> None:
        if not cap > 0:
            raise ValueError(f"--idle-poll must be > 0 seconds, got {cap!r}")
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--idle-poll"] or len(argv) < 2:
        raise SystemExit("usage: python -m privfed.federated.supernode --idle-poll S <args>")
    cap, argv = CappedSleep(float(argv[1])), argv[2:]
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = cap  # type: ignore[assignment]
    sys.argv = ["flower-supernode", *argv]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
