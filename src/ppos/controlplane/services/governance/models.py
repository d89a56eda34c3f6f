"""Tables of the governance service.

Governed resources (tenants, queues, partners, partner routes, policies) carry
a resource version (bumped by every write an operator or a policy makes) and a
generation (bumped by spec changes; it orders the commands a gateway
receives). Decisions, outbox commands and admin jobs are the reconciler's,
the dispatcher's and the admin job runner's durable state: nothing of it lives
only in a process.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ppos.controlplane.storage.base import Base, Bytes, UTCDateTime

MAX_CAPACITY = 100_000


class TenantRow(Base):
    __tablename__ = "tenants"

    tenant_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    default_region: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    default_partner_id: Mapped[str | None] = mapped_column(
        String(63), ForeignKey("partners.partner_id"), nullable=True
    )
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    phase: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_tenants_phase", "phase"),)


class QueueRow(Base):
    __tablename__ = "queues"

    tenant_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("tenants.tenant_id"), primary_key=True
    )
    queue_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    applied_capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    applied_state: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    applied_generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint(f"capacity BETWEEN 1 AND {MAX_CAPACITY}", name="capacity_range"),
        Index("ix_queues_region_state", "region", "state"),
    )


class PartnerRow(Base):
    __tablename__ = "partners"

    partner_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    accepts_review: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class PartnerRouteRow(Base):
    __tablename__ = "partner_routes"

    route_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("tenants.tenant_id"), nullable=False
    )
    queue_id: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    partner_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("partners.partner_id"), nullable=False
    )
    fallback_partner_id: Mapped[str | None] = mapped_column(
        String(63), ForeignKey("partners.partner_id"), nullable=True
    )
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Governance state names (e.g. ["DEGRADED"]); empty: any.
    condition_states: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    condition_source_region: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    applied_generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_partner_routes_tenant", "tenant_id", "queue_id"),
        Index("ix_partner_routes_partner", "partner_id"),
    )


class PolicyRow(Base):
    __tablename__ = "governance_policies"

    policy_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    # '' for a global policy, else the tenant id (no NULL: the unique key must hold).
    tenant_scope: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    trigger_state: Mapped[str] = mapped_column(String(40), nullable=False)
    # [{"kind": "REIMAGE_NODE", "parameters": {...}}, ...]
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    node_failure_threshold: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    node_failure_window_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("tenant_scope", "trigger_state", name="uq_governance_policies_scope"),
    )


class DecisionRow(Base):
    """The reconciler's verdict on one synced job revision under one policy.

    The unique key (region, job, revision, policy) is what makes the reconciler
    act at most once: the decision and its outbox commands commit together, so
    a second replica (or a replay after a crash) cannot insert it again.
    """

    __tablename__ = "governance_decisions"

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[str] = mapped_column(String(128), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)
    policy_id: Mapped[str] = mapped_column(String(63), nullable=False)
    policy_generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    queue_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    node_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    governance_state: Mapped[str] = mapped_column(String(40), nullable=False)
    payload_sha256: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    sync_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    record_time: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # What was done to the node ('REIMAGE', 'CORDON' or ''), for failure windows.
    node_action: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    rationale: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint(
            "region", "job_id", "revision", "policy_id", name="uq_governance_decisions_job"
        ),
        Index("ix_governance_decisions_node", "region", "node_id", "record_time"),
        Index("ix_governance_decisions_created", "created_at"),
    )


class OutboxRow(Base):
    """A command on its way to a gateway or a peer service.

    Written in the transaction of the decision or operator change that caused
    it; delivered by a dispatcher that leases it (state SENT, lease owner and
    expiry) so no two replicas send it at once; retried with the same
    idempotency key until the receiver acknowledges it.
    """

    __tablename__ = "outbox_commands"

    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    target: Mapped[str] = mapped_column(String(80), nullable=False)
    method: Mapped[str] = mapped_column(String(200), nullable=False)
    request_payload: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    request_json: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    decision_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("governance_decisions.decision_id"), nullable=True
    )
    issued_by_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    issued_by_name: Mapped[str] = mapped_column(String(256), nullable=False)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    lease_owner: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    receiver_command_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    receiver_duplicate: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_outbox_commands_due", "state", "next_attempt_at"),
        Index("ix_outbox_commands_decision", "decision_id"),
        Index("ix_outbox_commands_created", "created_at"),
    )


class AdminJobRow(Base):
    __tablename__ = "admin_jobs"

    admin_job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    parameters: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    progress_done: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    progress_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    checkpoint: Mapped[str] = mapped_column(Text, nullable=False, default="")
    result_json: Mapped[str] = mapped_column(Text, nullable=False, default="")
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    cancel_reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    started_by_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    started_by_name: Mapped[str] = mapped_column(String(256), nullable=False)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    lease_owner: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_admin_jobs_state", "state"),
        Index("ix_admin_jobs_created", "created_at"),
    )


class RequestRow(Base):
    """Client request ids of idempotent calls, with a digest of the body."""

    __tablename__ = "governance_requests"

    method: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(200), nullable=False)
    response: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class LeaseRow(Base):
    """Named leases (leadership where no advisory lock exists, e.g. on SQLite)."""

    __tablename__ = "governance_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class ReconcilerCursorRow(Base):
    """How far the reconciler has read the synced jobs (a RegistrySync sequence)."""

    __tablename__ = "governance_reconciler_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sync_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class PolicyBackfillRow(Base):
    """A policy enabled or changed, still to evaluate the jobs synced before that.

    The window is the synced jobs in (after_sequence, up_to_sequence]; the
    reconciler moves after_sequence on page by page and drops the row when done.
    """

    __tablename__ = "governance_policy_backfills"

    policy_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    after_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    up_to_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    evaluated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # new decisions
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class GatewayHoldRow(Base):
    """A region whose gateway cannot be reached: its queues show HELD until it answers."""

    __tablename__ = "governance_gateway_holds"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_error: Mapped[str] = mapped_column(String(2000), nullable=False, default="")


class PartnerHoldRow(Base):
    """A partner a gateway cannot reach: the queues routed to it show HELD until a
    command naming it is acknowledged."""

    __tablename__ = "governance_partner_holds"

    partner_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_error: Mapped[str] = mapped_column(String(2000), nullable=False, default="")
