"""The sync status replies report the scheduler's lead (a Kubernetes-style Lease read
from leader_leases) and each region's recent jobs by governance state; the portal's
PposNoSyncLeader and PposRuntimeEnvironmentFailing rules read them."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections import Counter
from pathlib import Path

import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync import queries
from ppos.controlplane.services.registry_sync.service import RegistrySyncModule
from ppos.controlplane.services.registry_sync.status_reads import RECENT_JOBS_WINDOW
from ppos.controlplane.storage.leadership import LEASE_TTL
from ppos.portal.alerts import Observed, evaluate, runtime_failures
from ppos.preflight.v1 import job_pb2
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import FAST_SYNC_ENV, SyncWorld
from tests.support.servers import RunningPlane

REGION = "eu-west-1"
RULES_FILE = Path(__file__).resolve().parents[2] / "deploy/prometheus/ppos-alerts.yaml"


def _scheduler(plane: RunningPlane):  # type: ignore[no-untyped-def]
    for module in plane.server.modules:
        if isinstance(module, RegistrySyncModule):
            return module.scheduler
    raise AssertionError("registrysync is not hosted")


async def _statuses(world: SyncWorld) -> pb.ListSyncStatusesResponse:
    reply: pb.ListSyncStatusesResponse = await world.stub.ListSyncStatuses(
        pb.ListSyncStatusesRequest(), metadata=world.md
    )
    return reply


async def _until_reply(world: SyncWorld, condition, limit: float = 30):  # type: ignore[no-untyped-def]
    """The first ListSyncStatuses reply that satisfies `condition` (the limit only
    stops a hung test; it asserts nothing)."""
    async with asyncio.timeout(limit):
        while True:
            reply = await _statuses(world)
            if condition(reply):
                return reply
            await asyncio.sleep(0.05)


def _no_leader_alerts(reply: pb.ListSyncStatusesResponse) -> list[object]:
    leader = reply.leader if reply.HasField("leader") else None
    seen = Observed(statuses=reply.statuses, leader=leader, leader_read=True)
    return [
        a
        for a in evaluate(seen, dt.datetime.now(dt.UTC).timestamp())
        if a.rule == "PposNoSyncLeader"
    ]


def _rule_for_seconds(name: str) -> float:
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == name]
    value = str(rule["for"])
    return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]


async def test_a_plane_with_no_scheduled_sweeps_still_has_a_leader(world: WorldFactory) -> None:
    assert FAST_SYNC_ENV["PPOS_SYNC_INTERVAL"] == "0"  # --sync-interval 0: nothing scheduled
    sync = await world({REGION: {"synthetic": 20, "synthetic_size": 300}})
    first = await _until_reply(sync, lambda r: r.HasField("leader") and not r.leader.expired)
    lease = first.leader
    assert lease.name == "sync-leader"
    assert lease.holder_identity == f"{socket.gethostname()}:{os.getpid()}"
    assert lease.generation >= 1
    assert lease.lease_duration.ToTimedelta() == dt.timedelta(seconds=LEASE_TTL)
    assert lease.acquire_time.ToDatetime() <= lease.renew_time.ToDatetime()
    assert _no_leader_alerts(first) == []
    # The leader keeps renewing although it sweeps nothing.
    later = await _until_reply(
        sync, lambda r: r.leader.renew_time.ToDatetime() > lease.renew_time.ToDatetime()
    )
    assert later.leader.generation == lease.generation
    assert later.leader.acquire_time == lease.acquire_time
    assert not later.leader.expired
    assert _no_leader_alerts(later) == []
    got = await sync.stub.GetSyncStatus(pb.GetSyncStatusRequest(region=REGION), metadata=sync.md)
    assert got.leader.holder_identity == lease.holder_identity
    assert got.leader.generation == lease.generation


async def test_a_leader_that_stops_with_no_successor_fires_no_leader(world: WorldFactory) -> None:
    sync = await world({REGION: {"synthetic": 20, "synthetic_size": 300}})
    held = await _until_reply(sync, lambda r: r.HasField("leader") and not r.leader.expired)
    # The lease runs out within its duration, well inside PposNoSyncLeader's `for`.
    assert held.leader.lease_duration.ToTimedelta().total_seconds() < _rule_for_seconds(
        "PposNoSyncLeader"
    )
    await _scheduler(sync.plane).stop()  # the only replica: none takes over
    gone = await _until_reply(sync, lambda r: r.leader.expired)
    assert gone.leader.holder_identity == held.leader.holder_identity
    assert gone.leader.generation == held.leader.generation
    (alert,) = _no_leader_alerts(gone)
    assert alert.severity == "critical"  # type: ignore[attr-defined]
    assert held.leader.holder_identity in alert.summary  # type: ignore[attr-defined]
    ended = gone.leader.renew_time.ToMilliseconds() / 1000 + LEASE_TTL
    assert alert.started == ended  # type: ignore[attr-defined]


async def test_recent_jobs_count_what_was_synced_by_governance_state(
    world: WorldFactory, database_url: str
) -> None:
    sync = await world({REGION: {"synthetic": 120, "synthetic_size": 300}})
    done = await sync.sweep(REGION)
    assert done.state == pb.SWEEP_STATE_SUCCEEDED
    jobs = await sync.all_jobs(REGION, omit_payload=True)
    synced = Counter(j.record.governance_state for j in jobs)
    assert len(synced) >= 2, "the synthetic feed mixes governance states"
    reply = await _statuses(sync)
    (status,) = reply.statuses
    recent = status.recent_jobs
    assert recent.window.ToTimedelta() == RECENT_JOBS_WINDOW
    assert {c.governance_state: c.count for c in recent.counts} == dict(synced)
    failed = synced[job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT]
    assert runtime_failures(reply.statuses) == {REGION: (failed, len(jobs))}
    got = await sync.stub.GetSyncStatus(pb.GetSyncStatusRequest(region=REGION), metadata=sync.md)
    assert got.status.recent_jobs == recent

    # The window's start bounds what is counted (synced rows are append-only, so the
    # start moves rather than the rows): from the middle job's sync time on.
    since = jobs[len(jobs) // 2].sync_time.ToDatetime(tzinfo=dt.UTC)
    later = Counter(
        j.record.governance_state for j in jobs if j.sync_time.ToDatetime(tzinfo=dt.UTC) >= since
    )
    assert 0 < sum(later.values()) < len(jobs) or len({j.sync_time.seconds for j in jobs}) == 1
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            counted = queries.recent_job_counts(session, REGION, since)
            assert queries.recent_job_counts(session, REGION, dt.datetime.now(dt.UTC)) == {}
    finally:
        engine.dispose()
    assert {job_pb2.GovernanceState.Value(k): v for k, v in counted.items()} == dict(later)
    # A watcher's messages carry no counts (a query per poll per stream).
    watched = await sync.wait_status(REGION, lambda s: True)
    assert not watched.HasField("recent_jobs")
