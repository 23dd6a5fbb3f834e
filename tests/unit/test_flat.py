"""Packed ArrayRecords: one Array per record on the wire, the same records on either side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app import MetricRecord as Metrics

from privfed.federated.flat import (
    FLAT_KEY,
    flat_arrays_mod,
    is_packed,
    pack_content,
    unpack_content,
)
from privfed.federated.grid import FastPollGrid


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the process's task identity, which Flower sets inside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)


def _content() -> RecordDict:
    state = {
        "w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "steps": torch.tensor(7),  # an int64 buffer
        "scale": torch.tensor(0.5, dtype=torch.float64),  # 0-d
        "empty": torch.zeros(0),
    }
    legacy = Array(dtype="", shape=(), stype="bytes", data=b"\x00\x01")  # not a numpy array
    return RecordDict(
        {
            "arrays": ArrayRecord(state),
            "other": ArrayRecord({"legacy": legacy, "x": Array(np.ones(2))}),
            "single": ArrayRecord({"only": Array(np.ones(3))}),
            "config": ConfigRecord({"lr": 0.1}),
        }
    )


def test_pack_then_unpack_gives_back_identical_records() -> None:
    # Prepare
    content = _content()
    # Execute
    packed = pack_content(content)
    unpacked = unpack_content(packed)
    # Assert: one Array per multi-array record; byte-identical records (same object ids)
    assert list(packed["arrays"]) == [FLAT_KEY] and list(packed["other"]) == [FLAT_KEY]
    assert list(packed["single"]) == ["only"]  # one array: nothing to gain
    assert is_packed(packed) and not is_packed(unpacked)
    for key in content:
        assert unpacked[key].object_id == content[key].object_id, key
    assert list(unpacked["arrays"]) == ["w", "steps", "scale", "empty"]  # order kept


def test_packing_twice_is_packing_once() -> None:
    packed = pack_content(_content())
    assert pack_content(packed)["arrays"].object_id == packed["arrays"].object_id


def test_the_mod_unpacks_for_the_handler_and_packs_only_replies_to_packed_messages() -> None:
    # Prepare
    seen: list[bool] = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(is_packed(msg.content))
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    for packed in (True, False):
        content = pack_content(_content()) if packed else _content()
        msg = Message(content, dst_node_id=1, message_type="train")
        # Execute
        reply = flat_arrays_mod(msg, context, handler)
        # Assert
        assert seen[-1] is False  # the handler always sees per-tensor records
        assert is_packed(reply.content) is packed


class _Inner:
    """Stands in for Flower's Grid: keeps what is pushed, answers with a reply per message."""

    def __init__(self) -> None:
        self.pushed: list[RecordDict] = []

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        self.pushed.extend(m.content for m in messages)
        return ["id"]

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        request = Message(RecordDict(), dst_node_id=1, message_type="train")
        return [Message(pack_content(_content()), reply_to=request)]


def test_the_grid_packs_what_it_pushes_and_unpacks_what_it_pulls() -> None:
    inner = _Inner()
    grid = FastPollGrid(inner, poll_interval=0.01)  # type: ignore[arg-type]
    grid.push_messages([Message(_content(), dst_node_id=1, message_type="train")])
    replies = list(grid.pull_messages(["id"]))
    assert is_packed(inner.pushed[0])
    assert not is_packed(replies[0].content)
    assert replies[0].content["arrays"].object_id == _content()["arrays"].object_id
    assert isinstance(replies[0].content["config"], ConfigRecord)
    assert not isinstance(replies[0].content["config"], Metrics)


def test_a_grid_without_packing_pushes_records_as_they_are() -> None:
    inner = _Inner()
    grid = FastPollGrid(inner, poll_interval=0.01, pack_arrays=False)  # type: ignore[arg-type]
    grid.push_messages([Message(_content(), dst_node_id=1, message_type="train")])
    assert not is_packed(inner.pushed[0])
