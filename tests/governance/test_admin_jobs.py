"""Admin jobs: start, get, list, cancel, watch; progress that survives a crashed runner.

The runner and its lease/checkpoint machinery are the real ones. Where a test
needs a job whose steps it controls, it registers a stand-in step function
under the REGION_DRAIN kind in its own runner (the real kinds call the node
registry and registry sync; they are exercised end to end elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.runtime.composition import governance_deps
from ppos.controlplane.services.governance.admin_jobs.handle import JobHandle
from ppos.controlplane.services.governance.admin_jobs.run_writes import LeaseLost
from ppos.controlplane.services.governance.admin_jobs.runner import AdminJobRunner
from ppos.controlplane.services.governance.models import AdminJobRow
from tests.governance.conftest import Governed, StartGoverned
from tests.governance.support import count, details, eventually, refused

DRAIN = res.ADMIN_JOB_KIND_REGION_DRAIN
DRAIN_PARAMS = {"region": "eu-west-1", "reason": "datacentre maintenance"}
NO_RUNNER = {"PPOS_GOVERNANCE_BACKGROUND": "dispatcher", "PPOS_ADMIN_JOB_LEASE": "1s"}


def stepper(
    steps: int, pause: float, log: list[tuple[str, int]], hang_at: int | None = None
) -> Any:
    """A stand-in kind: `steps` steps, each saved with its checkpoint; with
    `hang_at`, it stops before that step and waits forever (to be killed there)."""

    async def run(job: JobHandle) -> dict[str, Any]:
        start = int(job.checkpoint.get("next", 0))
        for index in range(start, steps):
            if index == hang_at:
                await asyncio.Event().wait()
            await asyncio.sleep(pause)
            log.append((job.job_id, index))
            await job.progress(
                done=index + 1,
                total=steps,
                message=f"step {index + 1} of {steps}",
                checkpoint={"next": index + 1},
            )
        return {"steps": steps, "started_at_step": start}

    return run


async def _start(gov: Governed, request_id: str = "") -> res.AdminJob:
    reply = await gov.operator.StartAdminJob(
        pb.StartAdminJobRequest(kind=DRAIN, parameters=DRAIN_PARAMS, request_id=request_id)
    )
    return reply.job


async def _get(gov: Governed, job_id: str) -> res.AdminJob:
    return (await gov.operator.GetAdminJob(pb.GetAdminJobRequest(admin_job_id=job_id))).job


async def _runner(
    gov: Governed, kind: Any, owner: str
) -> tuple[AdminJobRunner, asyncio.Event, asyncio.Task[None]]:
    runner = AdminJobRunner(governance_deps(gov.runtime), {"REGION_DRAIN": kind}, owner=owner)
    stop = asyncio.Event()
    return runner, stop, asyncio.create_task(runner.run(stop))


async def test_progress_streams_until_the_job_succeeds(start_governed: StartGoverned) -> None:
    gov = await start_governed(NO_RUNNER)
    job = await _start(gov, request_id="drain-1")
    assert job.state == res.ADMIN_JOB_STATE_PENDING
    # The same request id returns the same job; another body under it is refused.
    assert (await _start(gov, request_id="drain-1")).admin_job_id == job.admin_job_id
    error = await refused(
        gov.operator.StartAdminJob(
            pb.StartAdminJobRequest(
                kind=DRAIN, parameters={**DRAIN_PARAMS, "reason": "other"}, request_id="drain-1"
            )
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    stream = gov.operator.WatchAdminJob(pb.WatchAdminJobRequest(admin_job_id=job.admin_job_id))
    # The stream's first message is the job as it is now; the runner starts after it.
    seen = [(await stream.read()).job]
    log: list[tuple[str, int]] = []
    _runner_a, stop, task = await _runner(gov, stepper(4, 0.05, log), "runner-a")
    try:
        while (reply := await stream.read()) is not grpc.aio.EOF:
            seen.append(reply.job)
    finally:
        stop.set()
        await task
    states = [j.state for j in seen]
    assert states[0] == res.ADMIN_JOB_STATE_PENDING
    assert states[-1] == res.ADMIN_JOB_STATE_SUCCEEDED
    done = [j.progress.done for j in seen]
    assert done == sorted(done)
    final = seen[-1]
    assert (final.progress.done, final.progress.total) == (4, 4)
    assert json.loads(final.result_json) == {"steps": 4, "started_at_step": 0}
    assert (final.started_by.kind, final.started_by.name) == ("operator", "break-glass")
    assert log == [(job.admin_job_id, i) for i in range(4)]
    listed = await gov.operator.ListAdminJobs(
        pb.ListAdminJobsRequest(states=[res.ADMIN_JOB_STATE_SUCCEEDED])
    )
    assert [j.admin_job_id for j in listed.jobs] == [job.admin_job_id]


async def test_cancel_stops_at_a_safe_point_and_says_where(start_governed: StartGoverned) -> None:
    gov = await start_governed(NO_RUNNER)
    job = await _start(gov)
    log: list[tuple[str, int]] = []
    _runner_a, stop, task = await _runner(gov, stepper(1000, 0.02, log), "runner-a")
    try:
        await eventually(lambda: _get(gov, job.admin_job_id), lambda j: j.progress.done >= 3)
        error = await refused(
            gov.operator.CancelAdminJob(pb.CancelAdminJobRequest(admin_job_id=job.admin_job_id))
        )
        assert "reason" in details(error)["fields"]
        cancelling = await gov.operator.CancelAdminJob(
            pb.CancelAdminJobRequest(admin_job_id=job.admin_job_id, reason="wrong region")
        )
        assert cancelling.job.state in (
            res.ADMIN_JOB_STATE_CANCELLING,
            res.ADMIN_JOB_STATE_CANCELLED,
        )
        ended = await eventually(
            lambda: _get(gov, job.admin_job_id),
            lambda j: j.state == res.ADMIN_JOB_STATE_CANCELLED,
        )
    finally:
        stop.set()
        await task
    assert ended.progress.message.startswith("cancelled (wrong region); stopped at: step ")
    assert json.loads(ended.progress.checkpoint)["next"] == ended.progress.done
    assert ended.progress.done < 1000
    assert len(log) == ended.progress.done
    error = await refused(
        gov.operator.CancelAdminJob(
            pb.CancelAdminJobRequest(admin_job_id=job.admin_job_id, reason="again")
        )
    )
    assert details(error)["reason"] == "ADMIN_JOB_ENDED"


async def test_a_crashed_runner_is_replaced_and_the_job_resumes_from_its_checkpoint(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_RUNNER)
    job = await _start(gov)
    log: list[tuple[str, int]] = []
    _runner_a, _stop, task = await _runner(gov, stepper(8, 0.01, log, hang_at=3), "runner-a")
    await eventually(lambda: _get(gov, job.admin_job_id), lambda j: j.progress.done == 3)
    # The runner dies between steps: nothing more is written (no finish).
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    crashed = await _get(gov, job.admin_job_id)
    assert crashed.state == res.ADMIN_JOB_STATE_RUNNING
    stopped_at = crashed.progress.done
    assert stopped_at == 3
    # Another replica takes over once the lease runs out, from the checkpoint.
    _other, stop_other, task_other = await _runner(gov, stepper(8, 0.01, log), "runner-b")
    try:
        final = await eventually(
            lambda: _get(gov, job.admin_job_id),
            lambda j: j.state == res.ADMIN_JOB_STATE_SUCCEEDED,
        )
    finally:
        stop_other.set()
        await task_other
    assert json.loads(final.result_json) == {"steps": 8, "started_at_step": stopped_at}
    assert [i for _, i in log] == list(range(8)), "no step done twice, none skipped"
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="admin_job", resource_id=job.admin_job_id)
    )
    methods = [e.method.rsplit("/", 1)[-1] for e in audit.entries]
    assert methods == [
        "StartAdminJob",
        "admin-job:start",
        "admin-job:resume",
        "admin-job:succeeded",
    ]


async def test_an_unreachable_peer_holds_the_job_and_it_can_be_cancelled(
    start_governed: StartGoverned,
) -> None:
    # The real HEALTH_SWEEP kind, run by the plane's own runner, with the node
    # registry nowhere to be found.
    gov = await start_governed(
        {"PPOS_SERVICES": "governance", "PPOS_PEER_NODEREGISTRY": "127.0.0.1:9"}
    )
    job = (
        await gov.operator.StartAdminJob(
            pb.StartAdminJobRequest(kind=res.ADMIN_JOB_KIND_HEALTH_SWEEP)
        )
    ).job
    held = await eventually(
        lambda: _get(gov, job.admin_job_id),
        lambda j: "answered UNAVAILABLE" in j.progress.message,
    )
    assert held.state == res.ADMIN_JOB_STATE_RUNNING
    assert held.progress.message.startswith("waiting: NodeRegistry.RunHealthSweep")
    await gov.operator.CancelAdminJob(
        pb.CancelAdminJobRequest(admin_job_id=job.admin_job_id, reason="registry down")
    )
    ended = await eventually(
        lambda: _get(gov, job.admin_job_id), lambda j: j.state == res.ADMIN_JOB_STATE_CANCELLED
    )
    assert "stopped at: waiting: NodeRegistry.RunHealthSweep" in ended.progress.message


async def test_pending_jobs_cancel_at_once_and_bad_requests_are_refused(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_RUNNER)
    job = await _start(gov)
    error = await refused(
        gov.operator.StartAdminJob(pb.StartAdminJobRequest(kind=DRAIN, parameters=DRAIN_PARAMS))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "ADMIN_JOB_CONFLICT"
    assert details(error)["metadata"]["admin_job_id"] == job.admin_job_id
    cancelled = await gov.operator.CancelAdminJob(
        pb.CancelAdminJobRequest(admin_job_id=job.admin_job_id, reason="not needed")
    )
    assert cancelled.job.state == res.ADMIN_JOB_STATE_CANCELLED
    assert cancelled.job.progress.message == "cancelled before it started (not needed)"
    cases = [
        (pb.StartAdminJobRequest(kind=0), "kind"),
        (pb.StartAdminJobRequest(kind=42), "kind"),
        (
            pb.StartAdminJobRequest(
                kind=res.ADMIN_JOB_KIND_REIMAGE_ROLLOUT, parameters={"region": "eu-west-1"}
            ),
            "parameters['image']",
        ),
        (
            pb.StartAdminJobRequest(
                kind=res.ADMIN_JOB_KIND_REIMAGE_ROLLOUT,
                parameters={
                    "region": "eu-west-1",
                    "image": "w:1",
                    "target_image": "w:1",
                    "target_digest": "sha256:nothex",
                    "reason": "r",
                },
            ),
            "parameters['target_digest']",
        ),
        (
            pb.StartAdminJobRequest(kind=DRAIN, parameters={"region": "eu-west-1"}),
            "parameters['reason']",
        ),
        (
            pb.StartAdminJobRequest(
                kind=res.ADMIN_JOB_KIND_HEALTH_SWEEP, parameters={"force": "1"}
            ),
            "parameters['force']",
        ),
        (
            pb.StartAdminJobRequest(kind=DRAIN, parameters={**DRAIN_PARAMS, "grace_seconds": "-4"}),
            "parameters['grace_seconds']",
        ),
    ]
    for request, field in cases:
        error = await refused(gov.operator.StartAdminJob(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in details(error)["fields"], (field, details(error)["fields"])
    error = await refused(gov.operator.GetAdminJob(pb.GetAdminJobRequest(admin_job_id="job_x")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_progress_stream_ends_unavailable_when_the_server_stops(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_RUNNER)
    job = await _start(gov)
    stream = gov.operator.WatchAdminJob(pb.WatchAdminJobRequest(admin_job_id=job.admin_job_id))
    first = await stream.read()
    assert first.job.state == res.ADMIN_JOB_STATE_PENDING
    await gov.plane.server.stop(grace=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert job.admin_job_id in (caught.value.details() or "")


async def test_a_peer_that_is_not_configured_fails_the_job_and_refuses_a_dry_run(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed({"PPOS_SERVICES": "governance"})
    job = (
        await gov.operator.StartAdminJob(
            pb.StartAdminJobRequest(kind=res.ADMIN_JOB_KIND_SYNC_SWEEP)
        )
    ).job
    failed = await eventually(
        lambda: _get(gov, job.admin_job_id), lambda j: j.state == res.ADMIN_JOB_STATE_FAILED
    )
    assert "PPOS_PEER_REGISTRYSYNC" in failed.error
    spec = res.GovernancePolicySpec(
        trigger_state=5, actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)]
    )
    error = await refused(
        gov.operator.DryRunGovernancePolicy(pb.DryRunGovernancePolicyRequest(spec=spec))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "PEER_NOT_CONFIGURED"


def _fenced() -> float:
    return REGISTRY.get_sample_value("ppos_fenced_writes_total", {"loop": "admin-job"}) or 0.0


async def test_a_runner_replaced_while_frozen_writes_nothing_and_calls_no_peer(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_RUNNER)  # leases of 1 s
    job = await _start(gov)
    gate = asyncio.Event()
    called: list[str] = []

    async def two_steps(handle: JobHandle) -> dict[str, Any]:
        await handle.progress(done=1, total=3, message="step 1", checkpoint={"next": 1})
        await gate.wait()
        # Frozen (the whole event loop, renewals too) for longer than the lease.
        time.sleep(1.5)  # noqa: ASYNC251 - stands for SIGSTOP
        with contextlib.suppress(LeaseLost):
            await handle.call("peer", lambda: _record(called))
        await handle.progress(done=2, total=3, message="step 2", checkpoint={"next": 2})
        return {}

    refused_before = _fenced()
    _runner_a, stop, task = await _runner(gov, two_steps, "runner-a")
    try:
        await eventually(lambda: _get(gov, job.admin_job_id), lambda j: j.progress.done == 1)
        # Another replica claims the job (a new run) while this one is away.
        gov.runtime.db.write_sync(lambda s: _claim_as(s, job.admin_job_id, "runner-b"))
        gate.set()
        await eventually(_fenced, lambda n: n >= refused_before + 1)
    finally:
        stop.set()
        await task
    assert called == []
    row = await _get(gov, job.admin_job_id)
    assert (row.state, row.progress.done) == (res.ADMIN_JOB_STATE_RUNNING, 1)
    assert count(gov.runtime, "admin_jobs", "lease_owner = 'runner-b' AND runs = 2") == 1


def _claim_as(session: Session, job_id: str, owner: str) -> None:
    row = session.get(AdminJobRow, job_id)
    assert row is not None
    row.runs += 1
    row.lease_owner = owner
    row.lease_expires_at = utcnow() + dt.timedelta(hours=1)


async def _record(called: list[str]) -> None:
    called.append("peer")
