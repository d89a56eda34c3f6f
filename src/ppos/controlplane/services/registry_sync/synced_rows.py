"""A synced revision's stored columns, as the page commit writes them (COPY or INSERT)."""

from __future__ import annotations

import datetime as dt

from ppos.controlplane.services.registry_sync.verify import Accepted

# The chain's columns first (chain.py sets them), then the record's.
COPY_COLUMNS = (
    "sync_sequence",
    "chain_position",
    "chain",
    "chain_checks",
    "chain_version",
    "region",
    "job_id",
    "revision",
    "tenant_id",
    "queue_id",
    "status",
    "governance_state",
    "node_id",
    "container_image",
    "create_time_ns",
    "update_time_ns",
    "canonical_payload",
    "canonical_payload_sha256",
    "payload_size",
    "source_cursor",
    "sweep_id",
    "synced_at",
)
COPY_TYPES = (
    "int8",
    "int8",
    "bytea",
    "bytea",
    "int2",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int8",
    "bytea",
    "bytea",
    "int8",
    "text",
    "text",
    "timestamptz",
)


def row_values(item: Accepted, region: str, sweep_id: str, now: dt.datetime) -> dict[str, object]:
    return {
        "region": region,
        "job_id": item.job_id,
        "revision": item.revision,
        "tenant_id": item.tenant_id,
        "queue_id": item.queue_id,
        "status": item.status,
        "governance_state": item.governance_state,
        "node_id": item.node_id,
        "container_image": item.container_image,
        "create_time_ns": item.create_time_ns,
        "update_time_ns": item.update_time_ns,
        "canonical_payload": item.payload,
        "canonical_payload_sha256": item.digest,
        "payload_size": len(item.payload),
        "source_cursor": item.cursor,
        "sweep_id": sweep_id,
        "synced_at": now,
    }
