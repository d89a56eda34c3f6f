"""The sync status replies' reads: each region's row, its recent jobs, the lead.

ListSyncStatuses and GetSyncStatus count each region's jobs stored in the last
RECENT_JOBS_WINDOW by governance state (one indexed range per region, in the
same read transaction as the status rows), so a client can tell a rate, such as
FAILED_RUNTIME_ENVIRONMENT's share, without paging through the jobs. The
stream leaves the counts out: every watcher would cost one query per poll.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync import convert, queries
from ppos.controlplane.storage.database import Database

RECENT_JOBS_WINDOW = dt.timedelta(minutes=15)  # as PposRuntimeEnvironmentFailing's window
SYNC_LEADER_LOOP = "sync-leader"  # the scheduler's lead (leader_leases.name)


async def region_statuses(db: Database, regions: list[str]) -> list[pb.RegionSyncStatus]:
    """Each region's status, without the recent jobs (the stream's read)."""
    return await db.read(lambda s: _statuses(s, regions, recent=False))


async def statuses_and_leader(
    db: Database, regions: list[str]
) -> tuple[list[pb.RegionSyncStatus], pb.LeaderLease | None]:
    """Each region's status with its recent jobs, and the scheduler's lead as
    recorded in leader_leases (None: never led), in one read transaction."""

    def read(session: Session) -> tuple[list[pb.RegionSyncStatus], pb.LeaderLease | None]:
        lead = convert.leader_lease(*queries.leader_lease(session, SYNC_LEADER_LOOP))
        return _statuses(session, regions, recent=True), lead

    return await db.read(read)


def _statuses(session: Session, regions: list[str], *, recent: bool) -> list[pb.RegionSyncStatus]:
    rows = queries.region_rows(session, regions)
    now = utcnow()
    statuses = [convert.region_status(region, rows.get(region), now) for region in regions]
    if recent:
        since = now - RECENT_JOBS_WINDOW
        for status in statuses:
            counts = queries.recent_job_counts(session, status.region, since)
            status.recent_jobs.CopyFrom(convert.recent_jobs(counts, RECENT_JOBS_WINDOW))
    return statuses
