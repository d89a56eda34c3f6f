"""How long an error reply may be, whatever the request held (see core/errors.py).

A default gRPC client reads at most 8 KiB of trailing metadata and may refuse
more: these cut every text a reply echoes, and every list it carries, so the
real status always reaches the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_ID_CHARS = 128  # an id or name echoed back: the longest id the API takes
MAX_TEXT_CHARS = 256  # any other text echoed back in a detail
MAX_MESSAGE_CHARS = 512
MAX_MESSAGE_WIRE_BYTES = 1024  # the message as gRPC sends it, percent-encoded
MAX_SHOWN_VIOLATIONS = 20
MAX_METADATA_ENTRIES = 16
MAX_DETAILS_BYTES = 4096  # the serialized Status; base64 on the wire: 5,464 bytes
# Detail fields that carry an id, a name or a path rather than prose.
_ID_FIELDS = frozenset({"field", "resource_name", "resource_type", "subject", "type", "owner"})


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (limit >= 32), its length shown."""
    if len(text) <= limit:
        return text
    note = f"...({len(text):,} chars)"
    return text[: limit - len(note)] + note


def _wire_bytes(char: str) -> int:
    """What one character of a status message costs once gRPC percent-encodes it."""
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "replace"))


def bounded_message(message: str) -> str:
    """A status message within MAX_MESSAGE_CHARS and MAX_MESSAGE_WIRE_BYTES."""
    message = clip(message, MAX_MESSAGE_CHARS)
    if message.isascii() and message.isprintable():  # the usual case, without a loop
        wire = len(message) + 2 * message.count("%")  # what _wire_bytes adds up to
    else:
        wire = sum(map(_wire_bytes, message))
    if wire <= MAX_MESSAGE_WIRE_BYTES:
        return message
    note = f"...({len(message):,} chars)"
    budget, kept = MAX_MESSAGE_WIRE_BYTES - len(note), 0
    for char in message:
        budget -= _wire_bytes(char)
        if budget < 0:
            break
        kept += 1
    return message[:kept] + note


def bounded_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    kept = sorted(metadata.items())[:MAX_METADATA_ENTRIES]
    return {
        clip(key, MAX_ID_CHARS): clip(
            value, MAX_ID_CHARS if key in _ID_FIELDS or key.endswith("_id") else MAX_TEXT_CHARS
        )
        for key, value in kept
    }


def bounded_detail(detail: Message, shown: int) -> Message:
    """A copy of `detail` with its texts cut and its lists at most `shown` long."""
    bounded = type(detail)()
    bounded.CopyFrom(detail)
    _bound_fields(bounded, shown)
    return bounded


def _bound_fields(message: Message, shown: int) -> None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            limit = MAX_ID_CHARS if field.name in _ID_FIELDS else MAX_TEXT_CHARS
            if field.is_repeated:
                items = [clip(item, limit) for item in value[:shown]]
                if len(value) > shown:
                    items.append(f"and {len(value) - shown:,} more")
                message.ClearField(field.name)
                getattr(message, field.name).extend(items)
            else:
                setattr(message, field.name, clip(value, limit))
        elif field.message_type is None:
            continue  # numbers, bytes, enums: bounded by their type or left to the size check
        elif field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                entries = bounded_metadata(dict(value))
                message.ClearField(field.name)
                getattr(message, field.name).update(entries)
        elif field.is_repeated:
            _bound_list(getattr(message, field.name), field.message_type, shown)
        else:
            _bound_fields(value, shown)


def _bound_list(items: Any, item_type: Descriptor, shown: int) -> None:
    """Keep `shown` items of a repeated message field, then one "and N more" item
    (when the item type has a description to say it in)."""
    hidden = len(items) - shown
    if hidden > 0:
        del items[shown:]
    for item in items:
        _bound_fields(item, shown)
    if hidden > 0 and "description" in item_type.fields_by_name:
        items.add(description=f"and {hidden:,} more")
