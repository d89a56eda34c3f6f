"""Tables of the node registry."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ppos.controlplane.storage.base import Base, BigIntPK, Bytes, UTCDateTime


class NodeRow(Base):
    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    hostname: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    capacity_slots: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    slots_in_use: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    schedulable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    unschedulable_reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    # When `schedulable` last changed (the Schedulable condition's transition time).
    schedulable_transition_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime, nullable=True
    )
    drain_deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    readiness: Mapped[str] = mapped_column(String(16), nullable=False)
    readiness_reason: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    last_transition_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # A liveness timestamp outside versioning (like a Kubernetes Lease): a heartbeat
    # that changes nothing else refreshes it in place, without a new resource version.
    last_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    container_image: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    container_digest: Mapped[str] = mapped_column(String(80), nullable=False, default="")
    registered: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    credential_generation: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # Registry resource version (node_events.event_id) of the node's last change.
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint("capacity_slots >= 0", name="capacity_not_negative"),
        # No index covers a column that heartbeats or sweeps change (readiness,
        # timestamps, versions): on PostgreSQL those updates are HOT (see
        # migration noderegistry_0003, which also sets fillfactor 50).
        Index("ix_nodes_region", "region"),
        Index("ix_nodes_container_image", "container_image"),
    )


class EnrollmentRow(Base):
    __tablename__ = "node_enrollments"

    enrollment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 (hex) of the one-time token; the token itself is never stored.
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when an operator withdrew the enrollment before any node redeemed it.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    revoke_reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")

    __table_args__ = (
        # ListEnrollments filters by region, newest first (ids sort by creation time).
        Index("ix_node_enrollments_region", "region", "enrollment_id"),
    )


class NodeEventRow(Base):
    """The node change log: one row per node change, written in the change's transaction.

    `event_id` is the registry's one global resource version. Ids become visible
    in commit order (see `changelog`), so every replica tails the same sequence.
    """

    __tablename__ = "node_events"

    event_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # What the change was, in CamelCase (`Registered`, `HeartbeatStale`, `Cordoned`...).
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    previous_readiness: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    readiness: Mapped[str] = mapped_column(String(16), nullable=False)
    # The Node message as of this version, encoded once by the writer. NULL for
    # the set-based sweep's events: readers take the node row (see `hub`).
    payload: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)

    __table_args__ = (
        Index("ix_node_events_created_at", "created_at"),
        {"sqlite_autoincrement": True},  # never reuse an id, even after pruning
    )


class NodeEventLogRow(Base):
    """One row: the highest event id pruned from the change log so far."""

    __tablename__ = "node_event_log"

    log_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pruned_through: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class NodeCommandRow(Base):
    """An instruction to one node (re-image) and its whole lifecycle."""

    __tablename__ = "node_commands"

    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    target_image: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    target_digest: Mapped[str] = mapped_column(String(80), nullable=False, default="")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(1024), nullable=False)
    issued_by_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    issued_by_name: Mapped[str] = mapped_column(String(256), nullable=False)
    acting_for: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    # SHA-256 of the canonical request body: a key reused with another body is refused.
    request_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivery_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    result_message: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)

    __table_args__ = (
        Index("ix_node_commands_node_state", "node_id", "state"),
        Index("ix_node_commands_state_deadline", "state", "deadline"),
    )
