"""The sync's own encoder of a synced row gives the generic encoding's bytes (no database)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from psycopg._copy_base import BinaryFormatter
from psycopg.adapt import Transformer
from psycopg.pq import Format

from ppos.controlplane.core import pgrecord
from ppos.controlplane.services.registry_sync import chain, prepared_rows
from ppos.controlplane.services.registry_sync.chain import SYNCED
from ppos.controlplane.services.registry_sync.synced_rows import (
    COPY_COLUMNS,
    COPY_TYPES,
    row_values,
)
from ppos.controlplane.services.registry_sync.verify import Accepted

ROW: dict[str, object] = {
    "sync_sequence": 7,
    "region": "eu-west-1",
    "job_id": "job_1",
    "revision": 3,
    "tenant_id": "t\u00e9nant \U0001f600",
    "queue_id": "",
    "status": "JOB_STATUS_COMPLETED",
    "governance_state": "GOVERNANCE_STATE_COMPLETED",
    "node_id": "node-1",
    "container_image": "registry.example/checks:1",
    "create_time_ns": -1,
    "update_time_ns": 2**63 - 1,
    "canonical_payload_sha256": hashlib.sha256(b"{}").digest(),
    "payload_size": 2,
    "source_cursor": "c_1",
    "sweep_id": "swp_1",
    "synced_at": dt.datetime(2026, 12, 5, 23, 59, 59, 999_999, tzinfo=dt.UTC),
    "chain_position": 1,
}


@pytest.mark.parametrize("times", [(-1, 2**63 - 1), (None, None), (None, 0)])
def test_the_syncs_encoder_matches_the_generic_one(times: tuple[int | None, int | None]) -> None:
    row = {**ROW, "create_time_ns": times[0], "update_time_ns": times[1]}
    generic = pgrecord.segments(SYNCED.oids_v2, [row[name] for name in SYNCED.names_v2])
    assert chain.synced_parts(row) == generic
    sealed = dict(row)
    tip = chain.seal(SYNCED, chain.Tip(), [sealed])
    assert tip.chain == hashlib.sha256(bytes(32) + chain.encoding(SYNCED, 2, row)).digest()
    assert sealed["chain_checks"] == pgrecord.field_checks(generic)


def test_a_value_of_the_wrong_type_never_encodes_like_a_sealed_one() -> None:
    """What a tamperer's edit on SQLite stores (text in an integer column) changes the
    encoding and names the field instead of failing the verification."""
    row = {**ROW, "revision": "3"}
    parts = pgrecord.segments(SYNCED.oids_v2, [row[name] for name in SYNCED.names_v2])
    checks = pgrecord.field_checks(chain.synced_parts(ROW))
    assert pgrecord.changed_fields(SYNCED.names_v2, parts, checks) == ["revision"]


def _accepted(row: dict[str, object], payload: bytes) -> Accepted:
    return Accepted(
        b"",
        str(row["job_id"]),
        int(str(row["revision"])),
        str(row["tenant_id"]),
        str(row["queue_id"]),
        str(row["status"]),
        str(row["governance_state"]),
        str(row["node_id"]),
        str(row["container_image"]),
        row["create_time_ns"],  # type: ignore[arg-type]
        row["update_time_ns"],  # type: ignore[arg-type]
        payload,
        hashlib.sha256(payload).digest(),
        str(row["source_cursor"]),
    )


def _copy_bytes(rows: list[dict[str, object]]) -> bytes:
    """What psycopg's COPY would send for the rows, formatted by psycopg itself."""
    transformer = Transformer()
    formatter = BinaryFormatter(transformer)
    transformer.set_dumper_types(
        [transformer.adapters.types[name].oid for name in COPY_TYPES], Format.BINARY
    )
    data = b"".join(bytes(formatter.write_row([row[c] for c in COPY_COLUMNS])) for row in rows)
    return data + bytes(formatter.end())


@pytest.mark.parametrize("times", [(-1, 2**63 - 1), (None, None), (None, 0)])
def test_rows_prepared_ahead_seal_and_copy_as_the_generic_path(
    times: tuple[int | None, int | None],
) -> None:
    """prepared_rows: the same links, checks and COPY bytes as chain.seal over the
    rows' values and psycopg's own COPY formatting of them."""
    payloads = [b"{}", '{"\u00e9": "\U0001f600"}'.encode(), b"x" * 5000]
    rows = []
    for index in range(len(payloads)):
        row = {**ROW, "create_time_ns": times[0], "update_time_ns": times[1]}
        row.update(job_id=f"job_{index}", sync_sequence=40 + index)
        rows.append(row)
    items = [_accepted(row, payload) for row, payload in zip(rows, payloads, strict=True)]
    start = chain.Tip(6, 39, hashlib.sha256(b"previous").digest())
    now = ROW["synced_at"]
    values = [
        {**row_values(item, "eu-west-1", "swp_1", now), "sync_sequence": 40 + index}  # type: ignore[arg-type]
        for index, item in enumerate(items)
    ]
    tip = chain.seal(SYNCED, start, values)
    ready = [prepared_rows.prepare(item, "eu-west-1", "swp_1") for item in items]
    sealing = prepared_rows.CopySeal(start, [40, 41, 42], ready, now)  # type: ignore[arg-type]
    assert b"".join(sealing.blocks()) == _copy_bytes(values)
    assert sealing.tip == tip == chain.Tip(9, 42, values[-1]["chain"])  # type: ignore[arg-type]


def test_a_row_prepared_for_another_sweep_is_prepared_again() -> None:
    item = _accepted(dict(ROW), b"{}")
    item.prepared = prepared_rows.prepare(item, "eu-west-1", "swp_other")
    again = prepared_rows.prepared(item, "eu-west-1", "swp_1")
    assert again == prepared_rows.prepare(item, "eu-west-1", "swp_1") != item.prepared
