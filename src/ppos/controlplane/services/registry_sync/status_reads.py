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


async def region_statuses(
    db: Database, regions: list[str], *, recent: bool = False
) -> list[pb.RegionSyncStatus]:
    """Each region's status, with its recent jobs by governance state when `recent`."""

    def read(session: Session) -> list[pb.RegionSyncStatus]:
        rows = queries.region_rows(session, regions)
        now = utcnow()
        statuses = [convert.region_status(region, rows.get(region), now) for region in regions]
        if recent:
            since = now - RECENT_JOBS_WINDOW
            for status in statuses:
                counts = queries.recent_job_counts(session, status.region, since)
                status.recent_jobs.CopyFrom(convert.recent_jobs(counts, RECENT_JOBS_WINDOW))
        return statuses

    return await db.read(read)


async def sync_leader(db: Database) -> pb.LeaderLease | None:
    """The scheduler's lead as recorded in leader_leases (None: never led)."""
    return await db.read(lambda s: convert.leader_lease(*queries.leader_lease(s, SYNC_LEADER_LOOP)))
