"""A Grid that waits for replies with a short poll instead of Flower's fixed 3 s.

``Strategy.start`` only talks to the Grid through ``send_and_receive`` and ``get_node_ids``;
wrapping the Grid Flower hands to the ServerApp is a public-API way to cut the ServerApp's
share of per-round latency (3 s per message round trip on loopback) to ``poll_interval`` s,
and to send each ArrayRecord as one packed Array (:mod:`privfed.federated.flat`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from flwr.app import Message
from flwr.serverapp import Grid

from privfed.federated.flat import pack_content, unpack_content

__all__ = ["DelegatingGrid", "FastPollGrid", "wait_for_nodes"]

log = logging.getLogger(__name__)


class DelegatingGrid(Grid):
    """A Grid that passes every call to the Grid Flower handed the ServerApp (``inner``).

    Subclasses override only what they change; Flower's strategies and workflows talk to the
    Grid through these methods alone.
    """

    def __init__(self, inner: Grid) -> None:
        self._inner = inner

    def set_run(self, run):  # type: ignore[override]
        self._inner.set_run(run)

    @property
    def run(self):  # type: ignore[override]
        return self._inner.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[override]
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._inner.send_and_receive(messages, timeout=timeout)


class FastPollGrid(DelegatingGrid):
    """Differs from the Grid it wraps in reply polling, packed arrays and dropped nodes.

    With ``pack_arrays`` every message's ArrayRecords leave as one packed Array each and
    replies are unpacked on arrival (:mod:`privfed.federated.flat`): the strategy and the
    hospitals' code see the usual per-tensor records.

    A node that missed a round's deadline is ``drop``-ped: it is not sampled again in this run,
    so later rounds do not each wait ``round_timeout_s`` for it while Flower's heartbeat
    patience (up to 60 s) has not yet noticed it is gone.
    """

    def __init__(
        self,
        inner: Grid,
        *,
        poll_interval: float,
        enrolled: Mapping[int, str] | None = None,
        pack_arrays: bool = True,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        super().__init__(inner)
        self._poll = poll_interval
        self.pack_arrays = pack_arrays
        #: Flower node id -> hospital name (from the roll call)
        self.names: dict[int, str] = {}
        self.dropped: set[int] = set()
        #: node id -> hospital of each enrolled key; None: every connected node is used
        self.enrolled = dict(enrolled) if enrolled is not None else None
        #: nodes seen that no enrolled key belongs to (never sent a message)
        self.refused: set[int] = set()

    def hospital(self, node_id: int) -> str:
        return self.names.get(node_id, f"node {node_id}")

    def drop(self, node_id: int) -> None:
        self.dropped.add(node_id)

    def get_node_ids(self) -> Iterable[int]:
        """Connected nodes that may take part: enrolled (when known) and not dropped."""
        nodes = [n for n in self._inner.get_node_ids() if n not in self.dropped]
        if self.enrolled is None:
            return nodes
        for node in sorted(set(nodes) - set(self.enrolled) - self.refused):
            self.refused.add(node)
            log.warning(
                "refused node %d: its key was not enrolled by this federation's operator; "
                "it gets no message and its replies are never aggregated",
                node,
            )
        return [n for n in nodes if n in self.enrolled]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        if self.pack_arrays:
            messages = list(messages)
            for msg in messages:
                if msg.has_content():
                    msg.content = pack_content(msg.content)
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        for msg in replies:
            if msg.has_content():
                msg.content = unpack_content(msg.content)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = {mid for mid in self.push_messages(messages) if mid}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._poll)
        return replies


def wait_for_nodes(grid: Grid, expected: int, *, timeout: float, poll: float = 0.2) -> list[int]:
    """Block until ``expected`` nodes are connected; fail clearly after ``timeout`` s.

    Stock strategies wait for ``min_available_nodes`` forever; this bounds that wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {expected} hospitals connected within {timeout:.0f} s "
                "(train_federated.startup_timeout_s)"
            )
        time.sleep(poll)
