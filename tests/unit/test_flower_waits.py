"""Object pulls that miss retry after 50 ms, at every call site Flower 1.41 has."""

from __future__ import annotations

import importlib

import pytest
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from privfed.federated.flower_waits import (
    PULL_CALL_SITES,
    PULL_FIRST_BACKOFF_S,
    shorten_pull_backoff,
)


@pytest.mark.parametrize("process", sorted(PULL_CALL_SITES))
def test_each_call_site_gets_the_short_first_backoff(process, monkeypatch) -> None:
    module_name, attr = PULL_CALL_SITES[process]
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    monkeypatch.setattr(module, attr, original)  # restored after the test
    quick = shorten_pull_backoff(process)
    assert getattr(module, attr) is quick
    assert quick.func is original and quick.keywords == {"initial_backoff": PULL_FIRST_BACKOFF_S}
    assert shorten_pull_backoff(process) is quick  # a second call (forked again) wraps once


def test_a_pull_that_misses_once_still_returns_the_object(monkeypatch) -> None:
    module_name, attr = PULL_CALL_SITES["serverapp"]
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, attr, getattr(module, attr))
    pull = shorten_pull_backoff("serverapp")
    calls: list[str] = []

    def pull_object(object_id: str) -> bytes:
        calls.append(object_id)
        if len(calls) == 1:  # the sender has not pushed it yet
            raise ObjectUnavailableError(object_id)
        return b"weights"

    assert pull(["obj-1"], pull_object) == {"obj-1": b"weights"}
    assert calls == ["obj-1", "obj-1"]
