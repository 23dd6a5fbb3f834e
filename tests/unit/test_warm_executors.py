"""Warm executors: the ServerApp's log flush loses no line; a busy executor waits on its task."""

from __future__ import annotations

import time
import types
from queue import Queue

from flwr.supercore.logger import start_log_uploader

from privfed.federated.serverapp_executor import flush_when_pushed


class SlowLogClient:
    """Stands in for the Runtime API client (no SuperLink here): records each PushLogs call,
    each taking 0.3 s, longer than the uploader's 0.2 s upload interval."""

    def __init__(self) -> None:
        self.pushed: list[str] = []

    def PushLogs(self, request) -> None:  # noqa: N802 - Flower's RPC name
        time.sleep(0.3)
        self.pushed.extend(request.logs)


def test_flush_returns_only_when_every_queued_line_was_pushed() -> None:
    # Prepare: Flower's own uploader thread, started through the patched module
    module = types.SimpleNamespace(start_log_uploader=start_log_uploader, flush_logs=None)
    flush_when_pushed(module)
    client = SlowLogClient()
    log_queue: Queue[str | None] = Queue()
    uploader = module.start_log_uploader(log_queue, 0, 1, client)
    lines = [f"round {i} done\n" for i in range(5)]
    # Execute: lines arrive while a push is in flight, then the ServerApp flushes
    log_queue.put(lines[0])
    time.sleep(0.25)
    for line in lines[1:]:
        log_queue.put(line)
    flushed = module.flush_logs(log_queue)
    # Assert: nothing queued before the flush is left for after the final status
    assert flushed is True
    assert client.pushed == lines
    assert not uploader.is_alive()


def test_wait_for_exit_wakes_when_the_child_exits_not_at_the_timeout() -> None:
    """What a warm executor does while its task runs: no polling, woken by the exit."""
    import subprocess

    from privfed.federated.processes import wait_for_exit

    child = subprocess.Popen(["sleep", "0.3"])
    t0 = time.monotonic()
    wait_for_exit({child.pid}, 120.0)
    waited = time.monotonic() - t0
    assert child.poll() is not None  # it had exited (a zombie until collected here)
    assert waited < 60.0  # woken by the exit, far before the 120 s timeout
    wait_for_exit({child.pid}, 120.0)  # a collected child: returns at once, no error
