"""Rows to protobuf messages. Payload bytes are handed over as stored: never re-encoded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import timestamp_pb2

from ppos.controlplane.core.timeutil import to_duration, to_timestamp, utcnow
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync.lag import lag_seconds
from ppos.controlplane.services.registry_sync.mirror_check import RegionReport
from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SweepRegionRow,
    SweepRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.controlplane.services.registry_sync.verify import enum_value
from ppos.controlplane.storage.leases import LeaderLeaseRow
from ppos.preflight.v1 import job_pb2

SWEEP_STATES = {
    "PENDING": pb.SWEEP_STATE_PENDING,
    "RUNNING": pb.SWEEP_STATE_RUNNING,
    "SUCCEEDED": pb.SWEEP_STATE_SUCCEEDED,
    "FAILED": pb.SWEEP_STATE_FAILED,
    "CANCELLED": pb.SWEEP_STATE_CANCELLED,
}
SWEEP_STATE_NAMES = {value: key for key, value in SWEEP_STATES.items()}


def _stamp_ns(value: int | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(value)
    return stamp


def region_status(
    region: str, row: SyncRegionRow | None, now: dt.datetime | None = None
) -> pb.RegionSyncStatus:
    status = pb.RegionSyncStatus(region=region)
    if row is None:
        return status
    now = now or utcnow()
    status.cursor = row.cursor
    status.lag_changes = row.lag_changes
    age = lag_seconds(row.lag_changes, row.newest_change_ns, now.timestamp())
    if age is not None:
        status.lag.CopyFrom(to_duration(age))
    if row.last_success_at is not None:
        status.last_success_time.FromDatetime(row.last_success_at)
    if row.last_attempt_at is not None:
        status.last_attempt_time.FromDatetime(row.last_attempt_at)
    status.last_error = row.last_error
    status.records_synced = row.records_synced
    status.bytes_synced = row.bytes_synced
    status.quarantined_count = row.quarantined_count
    status.sweeping = row.active_sweep_id is not None
    status.head_cursor = row.head_cursor
    status.duplicates_skipped = row.duplicates_skipped
    status.pages_committed = row.pages_committed
    status.active_sweep_id = row.active_sweep_id or ""
    return status


def recent_jobs(counts: dict[str, int], window: dt.timedelta) -> pb.RecentSyncedJobs:
    recent = pb.RecentSyncedJobs(window=to_duration(window.total_seconds()))
    for state, count in sorted(counts.items()):
        recent.counts.add(
            governance_state=cast(Any, enum_value(job_pb2.GovernanceState, state)), count=count
        )
    return recent


def leader_lease(row: LeaderLeaseRow | None, now: dt.datetime) -> pb.LeaderLease | None:
    """The lease as a Kubernetes Lease reads; expired by `now` (the database's clock)."""
    if row is None:
        return None
    lease = pb.LeaderLease(name=row.name, holder_identity=row.holder, generation=row.generation)
    if row.acquired_at is not None:
        lease.acquire_time.FromDatetime(row.acquired_at)
    if row.renewed_at is not None:
        lease.renew_time.FromDatetime(row.renewed_at)
    if row.lease_seconds is not None:
        lease.lease_duration.CopyFrom(to_duration(row.lease_seconds))
    # A row without an expiry was written before leases were renewed: no live lead known.
    lease.expired = row.expires_at is None or row.expires_at <= now
    return lease


def sweep(row: SweepRow, parts: Sequence[SweepRegionRow]) -> pb.Sweep:
    message = pb.Sweep(
        sweep_id=row.sweep_id,
        regions=list(row.regions),
        state=SWEEP_STATES[row.state],
        error=row.error,
        started_by=row.started_by,
        cancel_requested=row.cancel_requested,
        request_id=row.request_id or "",
    )
    started = row.started_at or row.created_at
    message.start_time.FromDatetime(started)
    if row.ended_at is not None:
        message.end_time.FromDatetime(row.ended_at)
    for part in parts:
        message.records_synced += part.records_synced
        message.bytes_synced += part.bytes_synced
        message.quarantined += part.quarantined
        message.duplicates_skipped += part.duplicates_skipped
        message.pages += part.pages
        message.region_progress.append(
            pb.SweepRegion(
                region=part.region,
                state=SWEEP_STATES[part.state],
                records_synced=part.records_synced,
                bytes_synced=part.bytes_synced,
                quarantined=part.quarantined,
                duplicates_skipped=part.duplicates_skipped,
                pages=part.pages,
                error=part.error,
            )
        )
    return message


def job_record(row: SyncedJobRow, *, payload: bytes | None) -> job_pb2.JobRecord:
    """The record as received; `payload` None leaves the payload out (digest stays)."""
    record = job_pb2.JobRecord(
        job_id=row.job_id,
        region=row.region,
        tenant_id=row.tenant_id,
        queue_id=row.queue_id,
        revision=row.revision,
        status=cast(Any, enum_value(job_pb2.JobStatus, row.status)),
        governance_state=cast(Any, enum_value(job_pb2.GovernanceState, row.governance_state)),
        node_id=row.node_id,
        container_image=row.container_image,
        canonical_payload_sha256=bytes(row.canonical_payload_sha256),
        cursor=row.source_cursor,
    )
    if payload is not None:
        record.canonical_payload = payload
    create_time = _stamp_ns(row.create_time_ns)
    if create_time is not None:
        record.create_time.CopyFrom(create_time)
    update_time = _stamp_ns(row.update_time_ns)
    if update_time is not None:
        record.update_time.CopyFrom(update_time)
    return record


def synced_job(row: SyncedJobRow, *, payload: bytes | None) -> pb.SyncedJob:
    return pb.SyncedJob(
        record=job_record(row, payload=payload),
        sync_sequence=row.sync_sequence,
        sync_time=to_timestamp(row.synced_at),
        canonical_payload_size=row.payload_size,
    )


def quarantined(row: QuarantinedRecordRow) -> pb.QuarantinedRecord:
    return pb.QuarantinedRecord(
        quarantine_id=row.quarantine_id,
        region=row.region,
        job_id=row.job_id,
        revision=row.revision,
        reason=row.reason,
        detail=row.detail,
        raw_record=bytes(row.raw_record),
        source_cursor=row.source_cursor,
        quarantine_time=to_timestamp(row.quarantined_at),
        sweep_id=row.sweep_id,
        raw_record_sha256=bytes(row.raw_record_sha256),
    )


def mirror_verification(report: RegionReport, verified_at: dt.datetime) -> pb.MirrorVerification:
    out = pb.MirrorVerification(
        region=report.region,
        intact=report.intact,
        synced_records=report.synced_rows,
        quarantined_records=report.quarantined_rows,
        checkpoints=report.checkpoints,
        chain_head=report.synced_head,
        verified_at=to_timestamp(verified_at),
    )
    found = report.divergence
    if found is not None:
        out.divergence.CopyFrom(
            pb.MirrorDivergence(
                kind=pb.DivergenceKind.Value(f"DIVERGENCE_KIND_{found.kind}"),
                table=found.table,
                position=found.position,
                row_id=found.row_id,
                job_id=found.job_id,
                revision=found.revision,
                fields=list(found.fields),
                detail=found.detail,
            )
        )
    return out
