"""Active alerts, computed by the portal from what the plane's services report.

The same conditions are exported for Prometheus in deploy/prometheus/ppos-alerts.yaml
(over the plane's /metrics); here they are evaluated on the overview's reads (sync
statuses with their recent jobs by governance state and the scheduler's lead, the
nodes the portal watches, the outbox), and `AlertBook` remembers since when each has
been firing (from the plane's own time when it says, as a lease's end). The banner on
every page shows the last evaluation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as sync_pb
from ppos.preflight.v1 import job_pb2

SYNC_LAG_ALERT_SECONDS = 300.0  # as PposSyncLagHigh's threshold
NOT_READY_ALERT_SHARE = 0.2  # as PposNodesNotReady's threshold
QUARANTINE_WINDOW_SECONDS = 900.0  # as PposQuarantineGrowing's window
OUTBOX_STUCK_SECONDS = 900.0  # as PposOutboxStuck's 15 min
ADMIN_JOB_FAILED_WINDOW_SECONDS = 3600.0  # as PposAdminJobFailed's 1 h
# PposRuntimeEnvironmentFailing: over the jobs the plane reports synced in its recent
# window (RegionSyncStatus.recent_jobs, 15 min as the Prometheus rule's).
RUNTIME_FAILURE_SHARE = 0.25  # of the jobs synced in the window
RUNTIME_FAILURE_MIN = 5  # so a handful of jobs is not a rate
FAILED_RUNTIME = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT


@dataclass(frozen=True)
class Alert:
    """One firing condition: `rule` names it as the Prometheus rules file does."""

    rule: str
    subject: str
    summary: str
    severity: str = "warning"
    started: float | None = None  # when the condition began, if the plane says

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)


@dataclass
class Observed:
    """What the alerts are evaluated over, as the overview read it."""

    statuses: Iterable[Any] = ()
    regions: Mapping[str, Counter[str]] = field(default_factory=dict)
    failed_commands: Iterable[res.OutboxCommand] = ()
    quarantine_growth: Mapping[str, int] = field(default_factory=dict)
    oldest_open_command: float | None = None  # when the oldest undelivered one was made
    failed_admin_jobs: Iterable[res.AdminJob] = ()
    # The sync scheduler's lead as ListSyncStatuses reported it (None: never led);
    # `leader_read` False when the statuses could not be read (then no verdict).
    leader: sync_pb.LeaderLease | None = None
    leader_read: bool = False


def evaluate(seen: Observed, now: float) -> list[Alert]:
    """The alerts the plane's current state fires (each rule is one condition)."""
    return [
        *_sync_alerts(seen.statuses),
        *_leader_alerts(seen.leader, seen.leader_read),
        *_quarantine_alerts(seen.quarantine_growth),
        *_runtime_alerts(runtime_failures(seen.statuses)),
        *_node_alerts(seen.regions),
        *_outbox_alerts(seen.failed_commands, seen.oldest_open_command, now),
        *_admin_job_alerts(seen.failed_admin_jobs, now),
    ]


def _sync_alerts(statuses: Iterable[Any]) -> list[Alert]:
    alerts: list[Alert] = []
    for status in statuses:
        lag = status.lag.ToTimedelta().total_seconds() if status.HasField("lag") else 0.0
        if lag > SYNC_LAG_ALERT_SECONDS:
            alerts.append(
                Alert("PposSyncLagHigh", status.region, f"sync {lag:.0f} s behind the registry")
            )
        if status.last_error:
            alerts.append(
                Alert(
                    "PposSyncRegionFailing",
                    status.region,
                    f"last sync attempt failed: {status.last_error[:200]}",
                    "critical",
                )
            )
    return alerts


def _leader_alerts(leader: sync_pb.LeaderLease | None, read: bool) -> list[Alert]:
    """No replica leads the sync: none ever did, or the last lease ran out (its holder
    stopped or was cut off and none took over). Since when: when the lease ended."""
    if not read or (leader is not None and not leader.expired):
        return []
    if leader is None:
        return [Alert("PposNoSyncLeader", "sync", "no replica has led the sync", "critical")]
    started = None
    summary = f"the lease of {leader.holder_identity} (generation {leader.generation}) ran out"
    if leader.HasField("renew_time"):
        renewed = leader.renew_time.ToMilliseconds() / 1000
        started = renewed + leader.lease_duration.ToMilliseconds() / 1000
    return [Alert("PposNoSyncLeader", "sync", summary, "critical", started)]


def _quarantine_alerts(growth: Mapping[str, int]) -> list[Alert]:
    return [
        Alert("PposQuarantineGrowing", region, f"{grown} records quarantined lately")
        for region, grown in sorted(growth.items())
        if grown > 0
    ]


def runtime_failures(statuses: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """Per region, (FAILED_RUNTIME_ENVIRONMENT jobs, all jobs) in the plane's recent window
    (regions whose status carries no recent counts are left out)."""
    failures = {}
    for status in statuses:
        if status.HasField("recent_jobs"):
            counts = {c.governance_state: c.count for c in status.recent_jobs.counts}
            failures[status.region] = (counts.get(FAILED_RUNTIME, 0), sum(counts.values()))
    return failures


def _runtime_alerts(failures: Mapping[str, tuple[int, int]]) -> list[Alert]:
    """`failures`: per region, (FAILED_RUNTIME_ENVIRONMENT jobs, all jobs) synced lately."""
    alerts = []
    for region, (failed, synced) in sorted(failures.items()):
        if failed >= RUNTIME_FAILURE_MIN and failed / max(synced, 1) > RUNTIME_FAILURE_SHARE:
            summary = f"{failed} of {synced} jobs synced lately FAILED_RUNTIME_ENVIRONMENT"
            alerts.append(Alert("PposRuntimeEnvironmentFailing", region, summary))
    return alerts


def _node_alerts(regions: Mapping[str, Counter[str]]) -> list[Alert]:
    alerts = []
    for region, counts in sorted(regions.items()):
        total = sum(counts.values())
        if counts["LOST"]:
            lost = f"{counts['LOST']} nodes LOST"
            alerts.append(Alert("PposNodesLost", region, lost, "critical"))
        not_ready = total - counts["READY"]
        if total and not_ready / total > NOT_READY_ALERT_SHARE:
            alerts.append(
                Alert("PposNodesNotReady", region, f"{not_ready} of {total} nodes not READY")
            )
    return alerts


def _outbox_alerts(
    failed_commands: Iterable[res.OutboxCommand], oldest_open: float | None, now: float
) -> list[Alert]:
    alerts = []
    failed = list(failed_commands)
    if failed:
        alerts.append(
            Alert("PposOutboxFailing", "outbox", f"{len(failed)} commands failed delivery")
        )
    if oldest_open is not None and now - oldest_open > OUTBOX_STUCK_SECONDS:
        waited = (now - oldest_open) / 60
        alerts.append(Alert("PposOutboxStuck", "outbox", f"a command has waited {waited:.0f} min"))
    return alerts


def _admin_job_alerts(jobs: Iterable[res.AdminJob], now: float) -> list[Alert]:
    alerts = []
    for job in jobs:
        ended = job.update_time.ToMilliseconds() / 1000
        if now - ended <= ADMIN_JOB_FAILED_WINDOW_SECONDS:
            kind = res.AdminJobKind.Name(job.kind).removeprefix("ADMIN_JOB_KIND_")
            summary = f"{kind} failed: {job.error[:200]}" if job.error else f"{kind} failed"
            alerts.append(Alert("PposAdminJobFailed", job.admin_job_id, summary))
    return alerts


@dataclass
class AlertBook:
    """The alerts firing at the last evaluation, with since when each fires."""

    clock: Callable[[], float] = time.time
    since: dict[tuple[str, str], float] = field(default_factory=dict)
    active: list[Alert] = field(default_factory=list)
    evaluated: float = 0.0

    def update(self, alerts: list[Alert]) -> list[Alert]:
        now = self.clock()
        keys = {alert.key for alert in alerts}
        self.since = {k: v for k, v in self.since.items() if k in keys}
        for alert in alerts:
            self.since.setdefault(alert.key, alert.started or now)
        self.active, self.evaluated = alerts, now
        return alerts

    def since_of(self, alert: Alert) -> float:
        return self.since.get(alert.key, self.evaluated)
