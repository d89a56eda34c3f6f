"""Protobuf wire encoding of WatchNodes messages from pre-encoded parts.

A WatchNodesResponse is `repeated WatchEvent events = 1`, so on the wire it is
just its events one after another, each framed as field 1. Each node change is
encoded once (its Node bytes, then each event type it is sent as); a
subscriber's message is the concatenation of the framed events it gets. The
servicer hands these bytes to gRPC as they are (no per-subscriber protobuf
work). Tests check the bytes against the protobuf runtime.
"""

from __future__ import annotations

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb

# Field numbers, as declared in node_registry_service.proto.
_EVENTS = 1  # WatchNodesResponse.events
_TYPE = 1  # WatchEvent.type
_VERSION = 2  # WatchEvent.resource_version
_NODE = 3  # WatchEvent.node
_VARINT, _LEN = 0, 2

SNAPSHOT = pb.WATCH_EVENT_TYPE_SNAPSHOT
SNAPSHOT_END = pb.WATCH_EVENT_TYPE_SNAPSHOT_END
ADDED = pb.WATCH_EVENT_TYPE_ADDED
MODIFIED = pb.WATCH_EVENT_TYPE_MODIFIED
DELETED = pb.WATCH_EVENT_TYPE_DELETED
BOOKMARK = pb.WATCH_EVENT_TYPE_BOOKMARK
RESYNC_REQUIRED = pb.WATCH_EVENT_TYPE_RESYNC_REQUIRED


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


_TYPE_KEY = _key(_TYPE, _VARINT)
_VERSION_KEY = _key(_VERSION, _VARINT)
_NODE_KEY = _key(_NODE, _LEN)
_EVENTS_KEY = _key(_EVENTS, _LEN)


def framed_event(event_type: int, version: int, node: bytes | None = None) -> bytes:
    """One WatchEvent, framed as an element of WatchNodesResponse.events."""
    body = _TYPE_KEY + varint(event_type)
    if version:
        body += _VERSION_KEY + varint(version)
    if node is not None:
        body += _NODE_KEY + varint(len(node)) + node
    return _EVENTS_KEY + varint(len(body)) + body
