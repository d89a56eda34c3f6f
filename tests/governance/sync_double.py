"""A stand-in for RegistrySyncService, for reconciler tests that need exact control.

It serves ListSyncedJobs and GetSyncedJob from records a test adds (any
governance state, node, time, revision; unreachable on request), behind the
same PREFLIGHT_JWT check a real peer applies (audience RegistrySyncService),
so the reconciler is exercised over the real contract and channel. The
end-to-end tests (test_e2e.py) use the real sync service and simulated region.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.security.peers import SERVICE_AUDIENCE
from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.auth import RequirePreflightJwt
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier


def job_record(
    job_id: str,
    state: int,
    *,
    revision: int = 1,
    node_id: str = "",
    tenant_id: str = "acme",
    queue_id: str = "main",
    region: str = "eu-west-1",
    at: float = 1_790_000_000.0,
    payload: bytes = b'{"engine":"pdfToolbox","findings":[]}',
) -> job_pb2.JobRecord:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return job_pb2.JobRecord(
        job_id=job_id,
        region=region,
        tenant_id=tenant_id,
        queue_id=queue_id,
        revision=revision,
        status=job_pb2.JOB_STATUS_FAILED
        if state == job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
        else job_pb2.JOB_STATUS_COMPLETED,
        governance_state=state,
        node_id=node_id,
        container_image="registry.example/ppos/preflight-worker:7.4.1",
        create_time=stamp,
        update_time=stamp,
        canonical_payload=payload,
        canonical_payload_sha256=hashlib.sha256(payload).digest(),
        cursor=f"c{job_id}-{revision}",
    )


@dataclass
class SyncDouble(rs_grpc.RegistrySyncServiceServicer):
    jobs: list[rs_pb.SyncedJob] = field(default_factory=list)
    available: bool = True
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, record: job_pb2.JobRecord) -> rs_pb.SyncedJob:
        synced = rs_pb.SyncedJob(record=record, sync_sequence=len(self.jobs) + 1)
        synced.sync_time.GetCurrentTime()
        self.jobs.append(synced)
        return synced

    async def _check(self, context: Any, name: str) -> None:
        self.calls.append((name, context.invocation_metadata()))
        if not self.available:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry sync double: down")

    async def ListSyncedJobs(
        self, request: rs_pb.ListSyncedJobsRequest, context: Any
    ) -> rs_pb.ListSyncedJobsResponse:
        await self._check(context, "ListSyncedJobs")
        size = request.page_size or 100
        states = set(request.governance_states)
        matching = [
            j
            for j in self.jobs
            if j.sync_sequence > request.after_sync_sequence
            and (not states or j.record.governance_state in states)
            and (not request.region or j.record.region == request.region)
        ]
        page = []
        for job in matching[:size]:
            copy = rs_pb.SyncedJob()
            copy.CopyFrom(job)
            if request.omit_payload:
                copy.record.ClearField("canonical_payload")
            page.append(copy)
        last = page[-1].sync_sequence if page else request.after_sync_sequence
        return rs_pb.ListSyncedJobsResponse(
            jobs=page, last_sync_sequence=last, has_more=len(matching) > size
        )

    async def GetSyncedJob(
        self, request: rs_pb.GetSyncedJobRequest, context: Any
    ) -> rs_pb.GetSyncedJobResponse:
        await self._check(context, "GetSyncedJob")
        found = [
            j
            for j in self.jobs
            if j.record.region == request.region
            and j.record.job_id == request.job_id
            and (not request.revision or j.record.revision == request.revision)
        ]
        if not found:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such synced job")
        return rs_pb.GetSyncedJobResponse(job=max(found, key=lambda j: j.record.revision))


@dataclass
class RunningDouble:
    double: SyncDouble
    server: grpc.aio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_sync_double(verifier: PreflightJwtVerifier) -> RunningDouble:
    server = grpc.aio.server(
        interceptors=[RequirePreflightJwt(verifier, SERVICE_AUDIENCE["registrysync"])]
    )
    double = SyncDouble()
    rs_grpc.add_RegistrySyncServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return RunningDouble(double, server, port)
