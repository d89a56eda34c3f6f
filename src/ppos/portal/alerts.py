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


def evaluate(
    statuses: Iterable[Any],
    regions: Mapping[str, Counter[str]],
    failed_commands: Iterable[res.OutboxCommand],
    quarantine_growth: Mapping[str, int],
) -> list[Alert]:
    """The alerts the plane's current state fires (each rule is one condition)."""
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
    for region, grown in sorted(quarantine_growth.items()):
        if grown > 0:
            alerts.append(
                Alert("PposQuarantineGrowing", region, f"{grown} records quarantined lately")
            )
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
    failed = list(failed_commands)
    if failed:
        alerts.append(
            Alert("PposOutboxFailing", "outbox", f"{len(failed)} commands failed delivery")
        )
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
