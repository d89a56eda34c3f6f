"""The portal's alert rules over what the overview read, each at its threshold; and the
series behind the charts, one point per bucket over the last hour."""

from __future__ import annotations

from collections import Counter

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as sync_pb
from ppos.portal.alerts import (
    ADMIN_JOB_FAILED_WINDOW_SECONDS,
    OUTBOX_STUCK_SECONDS,
    AlertBook,
    Observed,
    evaluate,
)
from ppos.portal.series import BUCKET_SECONDS, POINTS, Series
from ppos.preflight.v1 import job_pb2

NOW = 1_800_000_000.0


def _at(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(int(seconds * 1000))
    return stamp


def _fired(seen: Observed) -> set[tuple[str, str]]:
    return {alert.key for alert in evaluate(seen, NOW)}


def test_each_rule_fires_past_its_threshold_and_not_before() -> None:
    fresh = sync_pb.RegionSyncStatus(region="eu", last_attempt_time=_at(NOW - 5))
    assert _fired(Observed(statuses=[fresh])) == set()
    behind = sync_pb.RegionSyncStatus(region="eu", lag=Duration(seconds=301))
    assert _fired(Observed(statuses=[behind])) == {("PposSyncLagHigh", "eu")}

    assert _fired(Observed(oldest_open_command=NOW - OUTBOX_STUCK_SECONDS + 5)) == set()
    stuck = Observed(oldest_open_command=NOW - OUTBOX_STUCK_SECONDS - 5)
    assert _fired(stuck) == {("PposOutboxStuck", "outbox")}

    recent = res.AdminJob(admin_job_id="aj1", update_time=_at(NOW - 60), error="disk <full>")
    old = res.AdminJob(
        admin_job_id="aj0", update_time=_at(NOW - ADMIN_JOB_FAILED_WINDOW_SECONDS - 60)
    )
    alerts = evaluate(Observed(failed_admin_jobs=[recent, old]), NOW)
    assert [a.key for a in alerts] == [("PposAdminJobFailed", "aj1")]
    assert "disk <full>" in alerts[0].summary  # rendered escaped by the template

    runtime = {"eu": (5, 19), "us": (4, 4), "ap": (5, 20)}  # 26%, too few, exactly 25%
    statuses = [_recent(region, *counts) for region, counts in runtime.items()]
    statuses.append(sync_pb.RegionSyncStatus(region="sa"))  # no counts (a watch's message)
    assert _fired(Observed(statuses=statuses)) == {("PposRuntimeEnvironmentFailing", "eu")}

    regions = {"eu": Counter(READY=4, NOT_READY=1), "us": Counter(READY=3, LOST=1)}
    assert _fired(Observed(regions=regions)) == {
        ("PposNodesLost", "us"),
        ("PposNodesNotReady", "us"),
    }


def _recent(region: str, failed: int, synced: int) -> sync_pb.RegionSyncStatus:
    """A status whose recent window holds `synced` jobs, `failed` of them
    FAILED_RUNTIME_ENVIRONMENT and the others COMPLETED."""
    status = sync_pb.RegionSyncStatus(region=region)
    status.recent_jobs.window.FromSeconds(900)
    for state, count in (
        (job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT, failed),
        (job_pb2.GOVERNANCE_STATE_COMPLETED, synced - failed),
    ):
        if count:
            status.recent_jobs.counts.add(governance_state=state, count=count)
    return status


def test_no_sync_leader_fires_when_none_led_or_the_lease_ran_out() -> None:
    held = sync_pb.LeaderLease(name="sync-leader", holder_identity="h:1", generation=2)
    held.renew_time.CopyFrom(_at(NOW - 1))
    held.lease_duration.FromSeconds(5)
    assert _fired(Observed(leader=held, leader_read=True)) == set()
    assert _fired(Observed(leader=None, leader_read=False)) == set(), "statuses not read"
    assert _fired(Observed(leader=None, leader_read=True)) == {("PposNoSyncLeader", "sync")}

    ran_out = sync_pb.LeaderLease()
    ran_out.CopyFrom(held)
    ran_out.expired = True
    (alert,) = evaluate(Observed(leader=ran_out, leader_read=True), NOW)
    assert alert.key == ("PposNoSyncLeader", "sync")
    assert alert.severity == "critical"
    assert "h:1" in alert.summary
    assert alert.started == NOW - 1 + 5, "since when the lease ended, by the plane"
    book = AlertBook(clock=lambda: NOW + 60)
    book.update([alert])
    assert book.since_of(alert) == NOW + 4


def test_a_series_keeps_one_point_per_bucket_for_an_hour() -> None:
    now = [NOW]
    series = Series(clock=lambda: now[0])
    for step in range(3):  # a burst within one bucket: its latest value
        now[0] = NOW + step * 0.5
        series.record("eu", (float(step),))
    assert series.columns("eu") == ([NOW + 1.0], [[2.0]])
    for step in range(POINTS + 10):
        now[0] = NOW + BUCKET_SECONDS * (step + 1)
        series.record("eu", (float(step),))
    times, (values,) = series.columns("eu")
    assert len(times) == POINTS
    assert times[-1] - times[0] == BUCKET_SECONDS * (POINTS - 1)
    assert values[-1] == POINTS + 9
    span = series.since("eu", 60)  # from the last point before the minute
    assert span is not None
    assert span[1][0] - span[0][0] == 60 / BUCKET_SECONDS + 1
