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
    NO_LEADER_SECONDS,
    OUTBOX_STUCK_SECONDS,
    Observed,
    evaluate,
)
from ppos.portal.series import BUCKET_SECONDS, POINTS, Series

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

    stale = sync_pb.RegionSyncStatus(
        region="eu", last_attempt_time=_at(NOW - NO_LEADER_SECONDS - 1), lag=Duration(seconds=301)
    )
    assert _fired(Observed(statuses=[stale])) == {
        ("PposNoSyncLeader", "sync"),
        ("PposSyncLagHigh", "eu"),
    }

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
    assert _fired(Observed(runtime_failures=runtime)) == {("PposRuntimeEnvironmentFailing", "eu")}

    regions = {"eu": Counter(READY=4, NOT_READY=1), "us": Counter(READY=3, LOST=1)}
    assert _fired(Observed(regions=regions)) == {
        ("PposNodesLost", "us"),
        ("PposNodesNotReady", "us"),
    }


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
