"""The proposed fix for the federation's fixed per-round latency, measured beside stock Flower.

flwr 1.41's SuperNode sleeps a hard-coded 3 s whenever a pull finds no message
(``flwr/supernode/start_client_internal.py``) and polls for the ClientApp's reply every 0.5 s.
Each round therefore waits up to 3 s before any hospital sees the new global model. This
module runs ``flower-supernode`` with those sleeps capped at ``--idle-poll`` seconds, so the
benchmarks can show what a launcher-level fix would buy without patching Flower's files:

    python -m benchmarks.fastpoll --idle-poll 0.2 <flower-supernode arguments>

:class:`FastPollFederation` is :class:`~privfed.federated.launcher.LocalFederation` with its
SuperNodes started this way; everything else (SuperLink, executors, runs) is unchanged.
"""

from __future__ import annotations

import sys
import time as _time
from pathlib import Path
from typing import Any

from privfed.federated.launcher import LocalFederation

__all__ = ["FastPollFederation", "main"]

DEFAULT_IDLE_POLL_S = 0.2


class _CappedSleep:
    """Stands in for the ``time`` module inside the SuperNode loop: sleeps at most ``cap``."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


class FastPollFederation(LocalFederation):
    """A local federation whose SuperNodes poll the SuperLink every ``idle_poll`` seconds."""

    def __init__(self, *args: Any, idle_poll: float = DEFAULT_IDLE_POLL_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_poll = idle_poll
        root = str(Path(__file__).resolve().parents[1])
        self._env["PYTHONPATH"] = root + (
            ":" + self._env["PYTHONPATH"] if self._env.get("PYTHONPATH") else ""
        )

    def _start(self, name: str, args: list[str]):  # type: ignore[override]
        if name.startswith("supernode-") and Path(args[0]).name == "flower-supernode":
            args = [
                sys.executable,
                "-m",
                "benchmarks.fastpoll",
                "--idle-poll",
                str(self.idle_poll),
                *args[1:],
            ]
        return super()._start(name, args)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cap = DEFAULT_IDLE_POLL_S
    if argv[:1] == ["--idle-poll"]:
        cap, argv = float(argv[1]), argv[2:]
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = _CappedSleep(cap)  # type: ignore[assignment]
    sys.argv = ["flower-supernode", *argv]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
