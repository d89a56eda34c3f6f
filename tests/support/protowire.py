"""Protobuf wire bytes written by hand, for bodies no message class would build."""

from __future__ import annotations

from ppos.controlplane.services.node_registry.watch_encoding import varint

LENGTH_DELIMITED = 2


def length_delimited(number: int, value: bytes) -> bytes:
    """Field `number` as a length-delimited field (a string, bytes or message) holding `value`."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(len(value)) + value
