"""Flower's first retry of an object pull after 50 ms instead of 1 s: the round-time stalls.

flwr 1.41 sends a message as a list of message ids first and its objects (arrays, records)
after, one request each. Whoever pulls a message (a SuperNode from the SuperLink, a ClientApp
from its SuperNode, the ServerApp's grid from the SuperLink) can therefore ask for an object
its sender has not finished pushing; ``pull_objects`` then backs off exponentially from
``PULL_INITIAL_BACKOFF`` = 1 s (±20 % jitter, capped at 10 s). On loopback the missing object
arrives milliseconds later, yet the round waits the full second, or 3 s when it misses twice:
the bimodal round times (0.85 s or 1.7-2.1 s or 3-4 s, same work) of BENCHMARKS.md figure 1.

:func:`shorten_pull_backoff` rebinds the name a Flower module calls to the same function
with a 50 ms first backoff; it still doubles up to Flower's 10 s cap and keeps Flower's limit
on tries and time, so a link that is really slow is waited for as long as before. flwr is
pinned to 1.41.*, whose call sites are the ones named in :data:`PULL_CALL_SITES`.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

__all__ = ["PULL_CALL_SITES", "PULL_FIRST_BACKOFF_S", "shorten_pull_backoff"]

#: First wait after an object was not there yet (Flower: 1 s).
PULL_FIRST_BACKOFF_S = 0.05

#: process -> (module, name it calls): every object pull of flwr 1.41 that can miss.
PULL_CALL_SITES = {
    "supernode": ("flwr.supernode.start_client_internal", "pull_objects"),
    "clientapp": ("flwr.supernode.runtime.run_clientapp", "pull_and_inflate_object_from_tree"),
    "serverapp": ("flwr.superlink.grid.http_grid", "pull_objects"),
}


def shorten_pull_backoff(process: str) -> Any:
    """In this process, make ``process``'s object pulls retry after 50 ms first; the wrapper."""
    module_name, attr = PULL_CALL_SITES[process]
    module = importlib.import_module(module_name)
    current = getattr(module, attr)
    if isinstance(current, functools.partial):  # already done in this process (forked twice)
        return current
    quick = functools.partial(current, initial_backoff=PULL_FIRST_BACKOFF_S)
    setattr(module, attr, quick)
    return quick
