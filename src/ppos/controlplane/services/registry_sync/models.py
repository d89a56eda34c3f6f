"""Tables of the registry sync.

`synced_jobs` is a read-only mirror of the regional registries: rows are only
ever inserted, by the sync path, one page per transaction together with the
region's cursor. A revision is immutable; on both databases triggers refuse
any UPDATE or DELETE of a synced or quarantined row (and TRUNCATE). Payloads are the registry's
bytes, never re-serialised; on PostgreSQL they are compressed with lz4.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ppos.controlplane.storage.base import Base, BigIntPK, Bytes, UTCDateTime

# Sweep states as stored (the proto's SweepState names without the prefix).
PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE_STATES = frozenset({PENDING, RUNNING})


class SyncedJobRow(Base):
    """One job revision exactly as a regional registry sent it."""

    __tablename__ = "synced_jobs"

    # Local order of arrival: assigned at insert, in commit order.
    sync_sequence: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[str] = mapped_column(String(128), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(128), nullable=False)
    queue_id: Mapped[str] = mapped_column(String(128), nullable=False)
    # Enum names (`JOB_STATUS_COMPLETED`), or the number for values this build does not know.
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    governance_state: Mapped[str] = mapped_column(String(64), nullable=False)
    node_id: Mapped[str] = mapped_column(String(128), nullable=False)
    container_image: Mapped[str] = mapped_column(String(512), nullable=False)
    # Registry timestamps in nanoseconds since the epoch (exact; None when unset).
    create_time_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    update_time_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    canonical_payload: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    canonical_payload_sha256: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    payload_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    source_cursor: Mapped[str] = mapped_column(Text, nullable=False)
    sweep_id: Mapped[str] = mapped_column(String(64), nullable=False)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # The region's hash chain (chain.py): 1-based place in it, the link, per-field CRCs.
    chain_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)
    chain_checks: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)
    # Which encoding the link uses (chain.py): 1 for rows chained before registrysync_0003.
    chain_version: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")

    __table_args__ = (
        UniqueConstraint("region", "job_id", "revision", name="uq_synced_jobs_revision"),
        Index("ix_synced_jobs_job_id", "job_id"),
        Index("ix_synced_jobs_governance_state", "governance_state", "sync_sequence"),
        Index("ix_synced_jobs_region_sequence", "region", "sync_sequence"),
        # The recent jobs by governance state (RegionSyncStatus.recent_jobs), index only.
        Index("ix_synced_jobs_region_synced_state", "region", "synced_at", "governance_state"),
        {"sqlite_autoincrement": True},
    )


class SyncRegionRow(Base):
    """A region's cursor and sync status. `generation` fences concurrent sweepers."""

    __tablename__ = "sync_regions"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text, nullable=False, default="")
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    head_cursor: Mapped[str] = mapped_column(Text, nullable=False, default="")
    lag_changes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    newest_change_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    records_synced: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bytes_synced: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    duplicates_skipped: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    quarantined_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    pages_committed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    active_sweep_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class QuarantinedRecordRow(Base):
    """A record that failed verification, kept with its bytes as received. Never repaired."""

    __tablename__ = "sync_quarantine"

    quarantine_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[str] = mapped_column(String(128), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    raw_record: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    raw_record_sha256: Mapped[bytes] = mapped_column(Bytes, nullable=False)
    source_cursor: Mapped[str] = mapped_column(Text, nullable=False)
    sweep_id: Mapped[str] = mapped_column(String(64), nullable=False)
    quarantined_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # The region's quarantine hash chain (chain.py), as for synced_jobs.
    chain_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)
    chain_checks: Mapped[bytes | None] = mapped_column(Bytes, nullable=True)
    # Which encoding the link uses (chain.py): 1 for rows chained before registrysync_0003.
    chain_version: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")

    __table_args__ = (
        Index("ix_sync_quarantine_region", "region", "quarantine_id"),
        {"sqlite_autoincrement": True},
    )


class SweepRow(Base):
    """A run of the sync over some regions, requested by the scheduler or a caller."""

    __tablename__ = "sync_sweeps"

    sweep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    regions: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    started_by: Mapped[str] = mapped_column(String(256), nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How many times a leader picked it up again after a restart or a lost lead.
    resumed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (Index("ix_sync_sweeps_state_created", "state", "created_at"),)


class SweepRegionRow(Base):
    """One region's part of a sweep, with its progress (updated in each page's transaction)."""

    __tablename__ = "sync_sweep_regions"

    sweep_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("sync_sweeps.sweep_id", ondelete="CASCADE"), primary_key=True
    )
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    records_synced: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bytes_synced: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    quarantined: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    duplicates_skipped: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    pages: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
