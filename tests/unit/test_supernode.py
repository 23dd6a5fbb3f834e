"""The SuperNode wrapper that caps Flower's hard-coded idle waits (fixed per-round latency)."""

from __future__ import annotations

import time

import pytest

from privfed.federated.flower_commands import supernode_command
from privfed.federated.supernode import CappedSleep


def test_capped_sleep_never_waits_longer_than_the_cap() -> None:
    capped = CappedSleep(0.05)
    t0 = time.perf_counter()
    capped.sleep(3)  # what flwr 1.41's SuperNode loop asks for when no message is waiting
    assert time.perf_counter() - t0 < 1.0
    assert capped.monotonic() <= time.monotonic()  # everything else is the real time module


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--idle-poll must be > 0 seconds, got 0.0"):
        CappedSleep(0.0)


def test_supernode_command_uses_the_wrapper_only_when_asked() -> None:
    args = {"runtime_port": 9000, "node_config": 'hospital="h1"', "warm": True}
    stock = supernode_command("127.0.0.1:1", **args)
    capped = supernode_command("127.0.0.1:1", **args, idle_poll_s=0.2)
    assert stock[0].endswith("flower-supernode")
    assert capped[1:5] == ["-m", "privfed.federated.supernode", "--idle-poll", "0.2"]
    assert capped[5] == "--local-poll"
    assert capped[7:] == stock[1:]  # the same Flower arguments either way


def test_in_memory_waits_have_their_own_cap() -> None:
    capped = CappedSleep(5.0, local_cap=0.01)
    t0 = time.perf_counter()
    capped.sleep(0.5)  # flwr 1.41's wait for the ClientApp's reply
    assert time.perf_counter() - t0 < 0.3
    assert CappedSleep(0.2).local_cap == 0.2  # without one, both share the idle cap
