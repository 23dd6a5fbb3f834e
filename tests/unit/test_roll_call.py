"""The roll call names the hospitals that did not answer, not only how many."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from privfed.config import config_from_dict
from privfed.federated.queries import roll_call
from tests.conftest import raw_params

ENROLLED = {11: "hospital_1", 12: "hospital_2", 13: "hospital_3"}


class SilentNodeGrid:
    """A grid (FastPollGrid's interface) where every enrolled node but ``silent`` answers."""

    def __init__(self, silent: int) -> None:
        self.enrolled = dict(ENROLLED)
        self.silent = silent

    def get_node_ids(self) -> Iterable[int]:
        return list(self.enrolled)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float) -> list:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node != self.silent:
                replies.append(
                    SimpleNamespace(  # a reply as roll_call reads it (no Flower run here)
                        has_error=lambda: False,
                        metadata=SimpleNamespace(src_node_id=node),
                        content=RecordDict(
                            {"ident": ConfigRecord({"hospital": self.enrolled[node]})}
                        ),
                    )
                )
        return replies


def test_roll_call_names_the_silent_hospital(monkeypatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has set
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    cfg = config_from_dict(raw_params())
    with pytest.raises(RuntimeError) as failed:
        roll_call(SilentNodeGrid(silent=12), cfg, num_nodes=3, timeout=25.0, statistics=False)
    message = str(failed.value)
    assert "2 of 3 hospitals answered within 25.0 s" in message
    assert "no answer from hospital_2 (node 12)" in message
    assert "hospital_1" not in message and "hospital_3" not in message
