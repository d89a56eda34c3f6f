"""Sweeps on demand and on schedule, cancelled cleanly, watched, refused precisely."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, select

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.storage.audit import AuditEntry
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import call_error

EU = "eu-west-1"
US = "us-east-1"
METERED = {
    "PPOS_SYNC_PAGE_RECORDS": "10",
    "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "150",
    "PPOS_SYNC_BURST": "100ms",
}


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    out = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def audit_rows(database_url: str) -> list[AuditEntry]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    select(AuditEntry).where(AuditEntry.resource_kind == "sync_sweep")
                ).all()
            )  # type: ignore[arg-type]
    finally:
        engine.dispose()


async def test_bad_requests_are_refused_precisely_and_change_nothing(
    world: WorldFactory, database_url: str
) -> None:
    w = await world({EU: {"synthetic": 5, "synthetic_size": 300}})
    md = w.md
    negative_revision = pb.GetSyncedJobRequest(region=EU, job_id="job_1_00001", revision=-1)
    cases: list[tuple[Any, grpc.StatusCode, Sequence[str]]] = [
        (w.stub.StartSweep(pb.StartSweepRequest(regions=["mars-1"]), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["regions[0]"]),
        (w.stub.StartSweep(pb.StartSweepRequest(regions=[EU, EU]), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["regions[1]"]),
        (w.stub.StartSweep(pb.StartSweepRequest(request_id="no spaces please"), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["request_id"]),
        (w.stub.GetSweep(pb.GetSweepRequest(), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["sweep_id"]),
        (w.stub.GetSweep(pb.GetSweepRequest(sweep_id="swp_nope"), metadata=md),
         grpc.StatusCode.NOT_FOUND, []),
        (w.stub.CancelSweep(pb.CancelSweepRequest(sweep_id="swp_nope"), metadata=md),
         grpc.StatusCode.NOT_FOUND, []),
        (w.stub.ListSweeps(pb.ListSweepsRequest(states=[pb.SWEEP_STATE_UNSPECIFIED]), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["states[0]"]),
        (w.stub.GetSyncStatus(pb.GetSyncStatusRequest(region="Not A Region"), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["region"]),
        (w.stub.GetSyncStatus(pb.GetSyncStatusRequest(region="mars-1"), metadata=md),
         grpc.StatusCode.NOT_FOUND, []),
        (w.stub.WatchSyncStatus(pb.WatchSyncStatusRequest(regions=["mars-1"]), metadata=md).read(),
         grpc.StatusCode.INVALID_ARGUMENT, ["regions[0]"]),
        (w.stub.GetSyncedJob(negative_revision, metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["revision"]),
        (w.stub.GetSyncedJob(pb.GetSyncedJobRequest(job_id="bad id!"), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["region", "job_id"]),
        (w.stub.GetSyncedJob(pb.GetSyncedJobRequest(region=EU, job_id="job_1_00001"), metadata=md),
         grpc.StatusCode.NOT_FOUND, []),
        (w.stub.ListSyncedJobs(
            pb.ListSyncedJobsRequest(governance_states=[99], after_sync_sequence=-1), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["governance_states[0]", "after_sync_sequence"]),
        (w.stub.ListSyncedJobs(pb.ListSyncedJobsRequest(page_size=-5), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["page_size"]),
        (w.stub.ListQuarantinedRecords(
            pb.ListQuarantinedRecordsRequest(page_token="forged"), metadata=md),
         grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]),
    ]  # fmt: skip
    for call, code, fields in cases:
        error = await call_error(call)
        assert error.code() == code, (error.code(), error.details())
        assert set(fields) <= set(violations(error)), violations(error)
    listed = await w.stub.ListSweeps(pb.ListSweepsRequest(), metadata=md)
    assert list(listed.sweeps) == []
    assert audit_rows(database_url) == []
    assert (await w.status(EU)).records_synced == 0


async def test_no_regions_configured_is_a_failed_precondition(world: WorldFactory) -> None:
    w = await world({})
    error = await call_error(w.stub.StartSweep(pb.StartSweepRequest(), metadata=w.md))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PPOS_SYNC_REGIONS" in (error.details() or "")
    statuses = await w.stub.ListSyncStatuses(pb.ListSyncStatusesRequest(), metadata=w.md)
    assert list(statuses.statuses) == []


async def test_start_sweep_is_idempotent_per_request_id_and_audited(
    world: WorldFactory, database_url: str
) -> None:
    w = await world({EU: {"synthetic": 20, "synthetic_size": 300}, US: {"synthetic": 10}})
    first = await w.start_sweep(EU, request_id="ops-2026-11-28.1")
    again = await w.start_sweep(EU, request_id="ops-2026-11-28.1")
    assert again.sweep_id == first.sweep_id
    assert again.request_id == "ops-2026-11-28.1"
    error = await call_error(
        w.stub.StartSweep(
            pb.StartSweepRequest(regions=[US], request_id="ops-2026-11-28.1"), metadata=w.md
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in violations(error)
    done = await w.wait_sweep(first.sweep_id)
    assert done.state == pb.SWEEP_STATE_SUCCEEDED
    assert list(done.regions) == [EU]
    assert done.started_by == "operator:break-glass"
    assert (await w.status(US)).records_synced == 0  # only what was asked
    rows = audit_rows(database_url)
    assert [(r.resource_id, r.actor_kind, r.method) for r in rows] == [
        (
            first.sweep_id,
            "operator",
            "/ppos.controlplane.registrysync.v1.RegistrySyncService/StartSweep",
        )
    ]


async def test_cancel_stops_after_a_committed_page(world: WorldFactory, database_url: str) -> None:
    w = await world({EU: {"synthetic": 300, "synthetic_size": 400}}, env=METERED)
    started = await w.start_sweep()
    await w.wait_status(EU, lambda s: s.pages_committed >= 2)
    reply = await w.stub.CancelSweep(
        pb.CancelSweepRequest(sweep_id=started.sweep_id), metadata=w.md
    )
    assert reply.sweep.cancel_requested
    cancelled = await w.wait_sweep(started.sweep_id)
    assert cancelled.state == pb.SWEEP_STATE_CANCELLED
    assert cancelled.region_progress[0].state == pb.SWEEP_STATE_CANCELLED
    held = await w.all_jobs(EU, omit_payload=True)
    assert 20 <= len(held) < 300
    status = await w.status(EU)
    assert status.cursor == w.feed(EU).cursor(len(held))  # exactly what was committed
    assert not status.sweeping
    assert cancelled.records_synced == len(held)
    # Cancelling again changes nothing; the next sweep picks up where it stopped.
    again = await w.stub.CancelSweep(
        pb.CancelSweepRequest(sweep_id=started.sweep_id), metadata=w.md
    )
    assert again.sweep.state == pb.SWEEP_STATE_CANCELLED
    rest = await w.sweep()
    assert rest.records_synced == 300 - len(held)
    assert len(await w.all_jobs(EU, omit_payload=True)) == 300
    assert len(audit_rows(database_url)) == 3  # two starts, one cancel


async def test_a_pending_sweep_is_cancelled_at_once(world: WorldFactory) -> None:
    w = await world({EU: {"synthetic": 5}}, env={"PPOS_SYNC_SCHEDULER": "false"})
    started = await w.start_sweep()
    assert started.state == pb.SWEEP_STATE_PENDING  # nobody leads: it waits
    reply = await w.stub.CancelSweep(
        pb.CancelSweepRequest(sweep_id=started.sweep_id), metadata=w.md
    )
    assert reply.sweep.state == pb.SWEEP_STATE_CANCELLED
    assert reply.sweep.end_time.seconds > 0
    assert [p.state for p in reply.sweep.region_progress] == [pb.SWEEP_STATE_CANCELLED]
    listed = await w.stub.ListSweeps(
        pb.ListSweepsRequest(states=[pb.SWEEP_STATE_CANCELLED]), metadata=w.md
    )
    assert [s.sweep_id for s in listed.sweeps] == [started.sweep_id]


async def test_the_scheduler_sweeps_every_region_on_its_interval(world: WorldFactory) -> None:
    w = await world(
        {
            EU: {"synthetic": 40, "synthetic_size": 300},
            US: {"synthetic": 25, "synthetic_size": 300},
        },
        env={"PPOS_SYNC_INTERVAL": "200ms"},
    )
    for region, count in ((EU, 40), (US, 25)):
        status = await w.wait_status(region, lambda s, n=count: s.records_synced == n)
        assert status.cursor == w.feed(region).head_cursor
    # More sweeps follow on the interval; each finds nothing new.
    first = (await w.wait_status(EU, lambda s: s.last_success_time.seconds > 0)).last_success_time
    later = await w.wait_status(
        EU, lambda s: s.last_success_time.ToNanoseconds() > first.ToNanoseconds()
    )
    assert later.records_synced == 40
    sweeps = await w.stub.ListSweeps(pb.ListSweepsRequest(page_size=1), metadata=w.md)
    assert {s.started_by for s in sweeps.sweeps} == {"scheduler"}
    assert sweeps.next_page_token
    older = await w.stub.ListSweeps(
        pb.ListSweepsRequest(page_size=1, page_token=sweeps.next_page_token), metadata=w.md
    )
    assert older.sweeps[0].started_by == "scheduler"
    assert older.sweeps[0].sweep_id < sweeps.sweeps[0].sweep_id  # newest first


async def test_watch_streams_changes_and_ends_on_shutdown(world: WorldFactory) -> None:
    w = await world({EU: {"synthetic": 60, "synthetic_size": 300}, US: {"synthetic": 5}})
    call = w.stub.WatchSyncStatus(pb.WatchSyncStatusRequest(), metadata=w.md)
    snapshot = [await call.read(), await call.read()]
    assert sorted(r.status.region for r in snapshot) == [EU, US]
    assert all(r.status.records_synced == 0 for r in snapshot)
    sweep = await w.start_sweep(EU)
    seen_sweeping = False
    while True:
        reply = await call.read()
        assert reply.status.region == EU
        seen_sweeping |= reply.status.sweeping
        if reply.status.records_synced == 60 and not reply.status.sweeping:
            break
    assert seen_sweeping
    assert (await w.wait_sweep(sweep.sweep_id)).state == pb.SWEEP_STATE_SUCCEEDED
    stopping = asyncio.create_task(w.plane.server.stop(grace=1))
    error = await call_error(call.read())
    await stopping
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "call WatchSyncStatus again" in (error.details() or "")
