"""Helpers for node registry tests: node agents, operator stubs, status details, DB state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import MetaData, bindparam, create_engine, select, text

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.storage.base import UTCDateTime
from tests.support.servers import RunningPlane

IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
DIGEST = "sha256:" + "a" * 64
NEW_IMAGE = "registry.example/ppos/preflight-worker:7.5.0"
NEW_DIGEST = "sha256:" + "b" * 64
STATE_TABLES = ("nodes", "node_events", "node_commands", "node_enrollments", "audit_log")


def registry(plane: RunningPlane) -> pb_grpc.NodeRegistryServiceStub:
    return pb_grpc.NodeRegistryServiceStub(plane.channel)


@dataclass
class NodeAgent:
    """A worker node talking to the registry with its own credential."""

    plane: RunningPlane
    node_id: str
    credential: str
    stub: pb_grpc.NodeRegistryServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.stub = registry(self.plane)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    async def register(self, **overrides: Any) -> pb.RegisterNodeResponse:
        request = pb.RegisterNodeRequest(
            region=overrides.pop("region", "eu-west-1"),
            cluster=overrides.pop("cluster", "c1"),
            container=node_pb2.ContainerVersion(
                image=overrides.pop("image", IMAGE), digest=overrides.pop("digest", DIGEST)
            ),
            capacity_slots=overrides.pop("capacity_slots", 4),
            labels=overrides.pop("labels", {"gpu": "true"}),
            **overrides,
        )
        return await self.stub.RegisterNode(request, metadata=self.metadata)

    async def heartbeat(self, ready: bool = True, **fields: Any) -> pb.HeartbeatResponse:
        container = fields.pop("container", None)
        request = pb.HeartbeatRequest(ready=ready, **fields)
        if container is not None:
            request.container.CopyFrom(container)
        return await self.stub.Heartbeat(request, metadata=self.metadata)

    async def report(
        self, command_id: str, state: int, message: str = ""
    ) -> pb.ReportNodeCommandResponse:
        return await self.stub.ReportNodeCommand(
            pb.ReportNodeCommandRequest(command_id=command_id, state=state, message=message),  # type: ignore[arg-type]
            metadata=self.metadata,
        )


async def enroll(
    plane: RunningPlane,
    *,
    region: str = "eu-west-1",
    cluster: str = "c1",
    labels: dict[str, str] | None = None,
) -> NodeAgent:
    stub = registry(plane)
    enrollment = await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region=region, cluster=cluster, labels=labels or {}),
        metadata=plane.operator,
    )
    enrolled = await stub.EnrollNode(
        pb.EnrollNodeRequest(hostname="worker-1"),
        metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
    )
    return NodeAgent(plane, enrolled.node_id, enrolled.node_credential)


async def ready_node(plane: RunningPlane, **register: Any) -> NodeAgent:
    """Enrolled, registered and READY."""
    labels = register.pop("enroll_labels", None)
    region = register.get("region", "eu-west-1")
    agent = await enroll(plane, region=region, labels=labels)
    await agent.register(**register)
    await agent.heartbeat(ready=True)
    return agent


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    field_violations: dict[str, str]
    preconditions: list[tuple[str, str, str]]
    quota: list[str]
    retry_seconds: float | None


def refusal(error: grpc.aio.AioRpcError) -> Refusal:
    """The rich status details of a refused call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, meta, fields, pre, quota, retry = "", {}, {}, [], [], None
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, meta = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            pre = [(v.type, v.subject, v.description) for v in failure.violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            qf = error_details_pb2.QuotaFailure()
            detail.Unpack(qf)
            quota = [v.subject for v in qf.violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_r = error_details_pb2.RetryInfo()
            detail.Unpack(info_r)
            retry = info_r.retry_delay.seconds + info_r.retry_delay.nanos / 1e9
    return Refusal(error.code(), error.details() or "", reason, meta, fields, pre, quota, retry)


def db_state(url: str, tables: Sequence[str] = STATE_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the registry's tables (to prove a refused call changed nothing)."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=list(tables))
        with engine.connect() as connection:
            return {
                name: sorted(
                    (
                        tuple(str(v) for v in row)
                        for row in connection.execute(select(meta.tables[name]))
                    ),
                )
                for name in tables
            }
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()


def scalar(url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def set_time(url: str, sql: str, seconds_ago: float, **params: Any) -> None:
    """Run `sql` with `:t` bound to the time `seconds_ago` (time passing, not a mock)."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            statement = text(sql).bindparams(bindparam("t", type_=UTCDateTime))
            connection.execute(statement, {"t": when, **params})
    finally:
        engine.dispose()


def age_heartbeat(url: str, node_id: str, seconds: float) -> None:
    """Pretend the node's last heartbeat was `seconds` ago."""
    set_time(url, "UPDATE nodes SET last_heartbeat_at = :t WHERE node_id = :n", seconds, n=node_id)
