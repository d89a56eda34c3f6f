"""A synced row's bytes, prepared before its page's transaction (PostgreSQL).

Once a page is verified its rows are known but for five columns that wait
for the transaction: the sync sequence and chain position (drawn under the
lock), the link that covers them, the field checks, and the sync time. The
rest is encoded in the thread that verifies the page, while the page before
it is being written: the row's v2 encoding in two pieces around those columns
(chain.synced_number_parts and synced_text_parts, so byte for byte what
chain.seal hashes), the CRCs of those pieces' fields, and the row's fields in
COPY's binary format. The transaction then does per row two integer packs,
two CRCs, one SHA-256 and one join (`CopySeal`); nothing about the chain is
decided ahead of it, since the previous link and the ids are read inside it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ppos.controlplane.core import pgrecord
from ppos.controlplane.core.pgrecord import INT8
from ppos.controlplane.services.registry_sync import chain
from ppos.controlplane.services.registry_sync.chain import SYNCED, Tip
from ppos.controlplane.services.registry_sync.verify import Accepted

# COPY's binary format: a signature, flags and header extension, then per row a
# field count and each field's length (-1 for NULL) and bytes, then -1.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
# The first five COPY columns (synced_rows.COPY_COLUMNS): sync_sequence,
# chain_position, chain, chain_checks, chain_version.
_CHECKS_SIZE = 4 * len(SYNCED.columns_v2)
_ROW_HEAD = struct.Struct(f">hiqiqi32si{_CHECKS_SIZE}sih")
_COLUMNS = 22
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)
_INT8_FIELD = struct.Struct(">iq")
_CRC2 = struct.Struct(">II")
# Rows joined into one write to the COPY stream.
WRITE_ROWS = 32


@dataclass(frozen=True, slots=True)
class PreparedRow:
    region: str
    sweep_id: str
    numbers: bytes  # segments of revision, payload size, create and update times
    texts: bytes  # segments of region ... sweep_id (after the sync time)
    number_checks: bytes
    text_checks: bytes
    copy_fields: bytes  # COPY fields region ... sweep_id (synced_at follows)


def _int8_field(value: int | None) -> bytes:
    return _NULL if value is None else _INT8_FIELD.pack(8, value)


def _var_field(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def prepare(item: Accepted, region: str, sweep_id: str) -> PreparedRow:
    size = len(item.payload)
    row: dict[str, object] = {
        "region": region,
        "job_id": item.job_id,
        "tenant_id": item.tenant_id,
        "queue_id": item.queue_id,
        "status": item.status,
        "governance_state": item.governance_state,
        "node_id": item.node_id,
        "container_image": item.container_image,
        chain.DIGEST: item.digest,
        "source_cursor": item.cursor,
        "sweep_id": sweep_id,
    }
    numbers = chain.synced_number_parts(
        item.revision, size, item.create_time_ns, item.update_time_ns
    )
    texts = chain.synced_text_parts(row)
    # A text column's COPY field is its record segment without the type OID.
    text = [part[4:] for part in texts]
    copy_fields = b"".join(
        [
            text[0],  # region
            text[1],  # job_id
            _int8_field(item.revision),
            text[2],  # tenant_id
            text[3],  # queue_id
            text[4],  # status
            text[5],  # governance_state
            text[6],  # node_id
            text[7],  # container_image
            _int8_field(item.create_time_ns),
            _int8_field(item.update_time_ns),
            _var_field(item.payload),
            text[8],  # canonical_payload_sha256
            _int8_field(size),
            text[9],  # source_cursor
            text[10],  # sweep_id
        ]
    )
    return PreparedRow(
        region,
        sweep_id,
        b"".join(numbers),
        b"".join(texts),
        pgrecord.field_checks(numbers),
        pgrecord.field_checks(texts),
        copy_fields,
    )


def prepared(item: Accepted, region: str, sweep_id: str) -> PreparedRow:
    """The item's prepared row, made now if it was not made for this region and sweep."""
    held = item.prepared
    if isinstance(held, PreparedRow) and (held.region, held.sweep_id) == (region, sweep_id):
        return held
    return prepare(item, region, sweep_id)


class CopySeal:
    """Rows chained after `start` with the given ids, as COPY (binary) data made
    block by block as the COPY takes it, so the server stores one block while
    the next is sealed: the same links and checks as chain.seal. `tip` is the
    chain's new tip once every block was taken."""

    def __init__(
        self, start: Tip, ids: Sequence[int], rows: Sequence[PreparedRow], now: dt.datetime
    ) -> None:
        self._start, self._ids, self._rows, self._now = start, ids, rows, now
        self.tip: Tip | None = None

    def blocks(self) -> Iterator[bytes]:
        position, previous, row_id = self._start.position, self._start.chain, self._start.row_id
        head = SYNCED.prefix_v2 + pgrecord.count(len(SYNCED.columns_v2))
        stamp = pgrecord.timestamptz_segment(self._now)
        stamp_check, stamp_field = struct.pack(">I", zlib.crc32(stamp)), stamp[4:]
        i8, crc, sha256, pack_head = (
            pgrecord.INT8_SEGMENT,
            zlib.crc32,
            hashlib.sha256,
            _ROW_HEAD.pack,
        )
        pending: list[bytes] = [COPY_HEADER]
        for row_id, row in zip(self._ids, self._rows, strict=True):
            position += 1
            at, sequence = i8(INT8, 8, position), i8(INT8, 8, row_id)
            previous = sha256(
                b"".join((previous, head, at, sequence, row.numbers, stamp, row.texts))
            ).digest()
            checks = b"".join(
                (
                    _CRC2.pack(crc(at), crc(sequence)),
                    row.number_checks,
                    stamp_check,
                    row.text_checks,
                )
            )
            pending += (
                pack_head(
                    _COLUMNS,
                    8,
                    row_id,
                    8,
                    position,
                    32,
                    previous,
                    _CHECKS_SIZE,
                    checks,
                    2,
                    chain.V2,
                ),
                row.copy_fields,
                stamp_field,
            )
            if len(pending) >= 3 * WRITE_ROWS:
                yield b"".join(pending)
                pending = []
        pending.append(COPY_TRAILER)
        yield b"".join(pending)
        self.tip = Tip(position, row_id, previous)
