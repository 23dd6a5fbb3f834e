"""Each ArrayRecord travels as one Array: the transport fix for flwr 1.41's per-array objects.

flwr 1.41 moves every Array of a message as its own object, each with its own HTTP request on
every hop (ServerApp → SuperLink → SuperNode → ClientApp and back): about 40 requests per hop
for an 18-tensor model, which cost 0.4-0.8 s per hop on loopback (BENCHMARKS.md, figure 1).
Here each ArrayRecord of a message's content is packed, just before it leaves, into a single
Array whose bytes are a JSON layout followed by every array's own serialized bytes; it is
unpacked, byte for byte, right after it arrives. Nothing above the transport sees the packed
form: the ServerApp packs in :class:`~privfed.federated.grid.FastPollGrid`'s push and unpacks
in its pull (strategies aggregate the usual per-tensor records); the ClientApp unpacks and
packs in :func:`flat_arrays_mod`, and packs its reply only when the server's message came
packed, so either side talks to a peer that does not pack.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from flwr.app import Array, ArrayRecord, Context, Message, RecordDict

__all__ = [
    "FLAT_KEY",
    "FLAT_STYPE",
    "flat_arrays_mod",
    "is_packed",
    "pack_content",
    "pack_record",
    "unpack_content",
    "unpack_record",
]

#: The single key of a packed ArrayRecord, and its Array's serialization type.
FLAT_KEY = "privfed.flat"
FLAT_STYPE = "privfed.flat/v1"
_HEADER = struct.Struct("<I")  # byte length of the JSON layout that opens the buffer


def _is_flat(record: ArrayRecord) -> bool:
    return list(record) == [FLAT_KEY] and record[FLAT_KEY].stype == FLAT_STYPE


def pack_record(record: ArrayRecord) -> ArrayRecord:
    """One Array holding every array of ``record`` (names, dtypes, shapes, stypes, bytes)."""
    layout = [[name, a.dtype, list(a.shape), a.stype, len(a.data)] for name, a in record.items()]
    head = json.dumps(layout, separators=(",", ":")).encode()
    data = b"".join([_HEADER.pack(len(head)), head, *(a.data for a in record.values())])
    flat = Array(dtype="uint8", shape=(len(data),), stype=FLAT_STYPE, data=data)
    return ArrayRecord({FLAT_KEY: flat})


def unpack_record(record: ArrayRecord) -> ArrayRecord:
    """The ArrayRecord :func:`pack_record` packed, Array for Array identical."""
    view = memoryview(record[FLAT_KEY].data)
    (size,) = _HEADER.unpack_from(view)
    offset = _HEADER.size + size
    arrays: dict[str, Array] = {}
    for name, dtype, shape, stype, nbytes in json.loads(bytes(view[_HEADER.size : offset])):
        arrays[name] = Array(
            dtype=dtype, shape=tuple(shape), stype=stype, data=bytes(view[offset : offset + nbytes])
        )
        offset += nbytes
    if offset != len(view):
        raise ValueError(f"packed ArrayRecord has {len(view) - offset} trailing bytes")
    return ArrayRecord(arrays, keep_input=True)


def is_packed(content: RecordDict) -> bool:
    """Whether any ArrayRecord of ``content`` is packed."""
    return any(_is_flat(r) for r in content.array_records.values())


def pack_content(content: RecordDict) -> RecordDict:
    """``content`` with each ArrayRecord of two or more arrays packed (a new RecordDict)."""
    return RecordDict(
        {
            key: pack_record(r) if isinstance(r, ArrayRecord) and len(r) > 1 else r
            for key, r in content.items()
        }
    )


def unpack_content(content: RecordDict) -> RecordDict:
    """``content`` with each packed ArrayRecord unpacked (a new RecordDict)."""
    return RecordDict(
        {
            key: unpack_record(r) if isinstance(r, ArrayRecord) and _is_flat(r) else r
            for key, r in content.items()
        }
    )


def flat_arrays_mod(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """ClientApp mod: unpack what arrives packed; pack the reply to a packed message."""
    packed = msg.has_content() and is_packed(msg.content)
    if packed:
        msg.content = unpack_content(msg.content)
    reply = call_next(msg, context)
    if packed and reply.has_content():
        reply.content = pack_content(reply.content)
    return reply
