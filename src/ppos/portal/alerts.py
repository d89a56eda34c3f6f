"""Active alerts, computed by the portal from what the plane's services report.

The same conditions are exported for Prometheus in deploy/prometheus/ppos-alerts.yaml
(over the plane's /metrics); here they are evaluated on the overview's reads (sync
statuses, the nodes the portal watches, the outbox), and `AlertBook` remembers since
when each has been firing. The banner on every page shows the last evaluation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ppos.controlplane.governance.v1 import resources_pb2 as res

SYNC_LAG_ALERT_SECONDS = 300.0  # as PposSyncLagHigh's threshold
NOT_READY_ALERT_SHARE = 0.2  # as PposNodesNotReady's threshold
QUARANTINE_WINDOW_SECONDS = 900.0  # as PposQuarantineGrowing's window
OUTBOX_STUCK_SECONDS = 900.0  # as PposOutboxStuck's 15 min
ADMIN_JOB_FAILED_WINDOW_SECONDS = 3600.0  # as PposAdminJobFailed's 1 h
# The API has no leader flag: a leader attempts every region each sync interval
# (30 s by default), so no attempt anywhere for this long means no replica leads.
NO_LEADER_SECONDS = 600.0
RUNTIME_FAILURE_WINDOW_SECONDS = 900.0  # as PposRuntimeEnvironmentFailing's 15 min
RUNTIME_FAILURE_SHARE = 0.25  # of the jobs synced in the window
RUNTIME_FAILURE_MIN = 5  # so a handful of jobs is not a rate


@dataclass(frozen=True)
class Alert:
    """One firing condition: `rule` names it as the Prometheus rules file does."""

    rule: str
    subject: str
    summary: str
    severity: str = "warning"

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
    runtime_failures: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def evaluate(seen: Observed, now: float) -> list[Alert]:
    """The alerts the plane's current state fires (each rule is one condition)."""
    return [
        *_sync_alerts(seen.statuses, now),
        *_quarantine_alerts(seen.quarantine_growth),
        *_runtime_alerts(seen.runtime_failures),
        *_node_alerts(seen.regions),
        *_outbox_alerts(seen.failed_commands, seen.oldest_open_command, now),
        *_admin_job_alerts(seen.failed_admin_jobs, now),
    ]


def _sync_alerts(statuses: Iterable[Any], now: float) -> list[Alert]:
    alerts: list[Alert] = []
    attempts = []
    for status in statuses:
        if status.HasField("last_attempt_time"):
            attempts.append(status.last_attempt_time.ToMilliseconds() / 1000)
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
    if attempts and now - max(attempts) > NO_LEADER_SECONDS:
        quiet = (now - max(attempts)) / 60
        alerts.append(
            Alert(
                "PposNoSyncLeader", "sync", f"no region attempted for {quiet:.0f} min", "critical"
            )
        )
    return alerts


def _quarantine_alerts(growth: Mapping[str, int]) -> list[Alert]:
    return [
        Alert("PposQuarantineGrowing", region, f"{grown} records quarantined lately")
        for region, grown in sorted(growth.items())
        if grown > 0
    ]


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
            self.since.setdefault(alert.key, now)
        self.active, self.evaluated = alerts, now
        return alerts

    def since_of(self, alert: Alert) -> float:
        return self.since.get(alert.key, self.evaluated)
