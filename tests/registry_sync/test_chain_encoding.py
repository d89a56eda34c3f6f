"""The sync's own encoder of a synced row gives the generic encoding's bytes (no database)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from ppos.controlplane.core import pgrecord
from ppos.controlplane.services.registry_sync import chain
from ppos.controlplane.services.registry_sync.chain import SYNCED

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
