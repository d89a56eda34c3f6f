"""A page of job changes, read record by record from its wire bytes.

ListJobChanges answers are received undecoded and walked here field by
field, so each record's bytes are exactly what came over the wire: a record
that does not parse is quarantined with those bytes instead of failing the
whole page, and nothing is re-serialised on the way to the table.
"""

from __future__ import annotations

from dataclasses import dataclass

RECORDS_FIELD = 1
NEXT_CURSOR_FIELD = 2
END_OF_FEED_FIELD = 3
REMAINING_FIELD = 4

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_RECORD_TAG = RECORDS_FIELD << 3 | _LEN


class PageFormatError(ValueError):
    """The page itself (not one record) is not a well-formed message."""


@dataclass(frozen=True)
class RawPage:
    """The records' wire bytes, in the order received, and the page's trailer fields."""

    records: list[bytes]
    next_cursor: str
    end_of_feed: bool
    remaining_changes: int
    wire_size: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise PageFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise PageFormatError("varint longer than 10 bytes")


def parse_page(data: bytes) -> RawPage:
    """Split a ListJobChangesResponse (or StreamJobChangesResponse) into its parts.

    One loop with the record's case inline (over 60 lines): it runs for every record synced.
    """
    records: list[bytes] = []
    next_cursor = ""
    end_of_feed = False
    remaining = 0
    pos = 0
    size = len(data)
    view = memoryview(data)
    while pos < size:
        # The common field, a record under 2 MiB (tag byte 0x0A, a length of one to
        # three bytes), is read inline: this loop runs for every record synced.
        if data[pos] == _RECORD_TAG and pos + 3 < size:
            length = data[pos + 1]
            start = pos + 2
            if length & 0x80:
                second = data[pos + 2]
                length = (length & 0x7F) | (second & 0x7F) << 7
                start = pos + 3
                if second & 0x80:
                    third = data[pos + 3]
                    if not third & 0x80:
                        length |= third << 14
                        start = pos + 4
                    else:
                        start = 0  # a longer length: the general path below reads it
            end = start + length
            if start and end <= size:
                records.append(bytes(view[start:end]))
                pos = end
                continue
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise PageFormatError("field number 0")
        if wire_type == _VARINT:
            value, pos = _varint(data, pos)
            if field == END_OF_FEED_FIELD:
                end_of_feed = value != 0
            elif field == REMAINING_FIELD:
                remaining = value - (1 << 64) if value >= 1 << 63 else value
        elif wire_type == _LEN:
            length, pos = _varint(data, pos)
            end = pos + length
            if end > len(data):
                raise PageFormatError("length-delimited field runs past the end")
            if field == RECORDS_FIELD:
                records.append(bytes(view[pos:end]))
            elif field == NEXT_CURSOR_FIELD:
                try:
                    next_cursor = bytes(view[pos:end]).decode("utf-8")
                except UnicodeDecodeError:
                    raise PageFormatError("next_cursor is not UTF-8") from None
            pos = end
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        else:
            raise PageFormatError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise PageFormatError("field runs past the end")
    return RawPage(records, next_cursor, end_of_feed, remaining, len(data))
