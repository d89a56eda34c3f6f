"""How `pposctl sync status` shows the scheduler's lead and the recent jobs."""

from __future__ import annotations

from ppos.controlplane.cli.output import span, when
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.preflight.v1 import job_pb2

FAILED_RUNTIME = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT


def leader_line(reply: pb.ListSyncStatusesResponse | pb.GetSyncStatusResponse) -> str:
    """One line under the table: who leads, since when, and whether the lease holds."""
    if not reply.HasField("leader"):
        return "leader: none (no replica has led the sync)"
    lease = reply.leader
    held = "EXPIRED" if lease.expired else "held"
    return (
        f"leader: {lease.holder_identity} ({held}; generation {lease.generation}, "
        f"acquired {when(lease.acquire_time)} ago, renewed {when(lease.renew_time)} ago, "
        f"lease {span(lease.lease_duration)})"
    )


def recent_runtime_failures(status: pb.RegionSyncStatus) -> str:
    """`failed/synced` FAILED_RUNTIME_ENVIRONMENT over the recent window; `-` when not given."""
    if not status.HasField("recent_jobs"):
        return "-"
    counts = {c.governance_state: c.count for c in status.recent_jobs.counts}
    return f"{counts.get(FAILED_RUNTIME, 0)}/{sum(counts.values())}"
