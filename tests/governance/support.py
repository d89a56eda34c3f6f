"""Helpers of the governance tests: a simulated gateway server, a client, waiting, snapshots."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import MetaData, select, text
from sqlalchemy.orm import Session

from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.preflightsim import gateway as gateway_sim
from ppos.preflightsim import gateway_cli
from ppos.preflightsim.auth import RequirePreflightJwt, gateway_audience
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier
from tests.support.polling import eventually

# Every table governance writes, plus the shared audit log.
GOVERNANCE_TABLES = (
    "tenants",
    "queues",
    "partners",
    "partner_routes",
    "governance_policies",
    "governance_decisions",
    "outbox_commands",
    "admin_jobs",
    "governance_requests",
    "audit_log",
)


@dataclass
class GatewayServer:
    """A simulated regional gateway on a loopback port, behind the PREFLIGHT_JWT check."""

    region: str
    sim: gateway_sim.SimulatedGateway
    server: grpc.aio.Server
    port: int
    stopped: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.stop(0)


async def start_gateway(
    region: str, verifier: PreflightJwtVerifier, argv: list[str] | None = None, port: int = 0
) -> GatewayServer:
    parser = argparse.ArgumentParser()
    parser.add_argument("--region")
    gateway_cli.add_arguments(parser)
    args = parser.parse_args(["--region", region, *(argv or [])])
    server = grpc.aio.server(interceptors=[RequirePreflightJwt(verifier, gateway_audience(region))])
    sim = gateway_cli.register(server, args)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return GatewayServer(region, sim, server, bound)


@dataclass
class Operator:
    """GovernanceService as an operator calls it (the control token on every call)."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    stub: Any = field(init=False)

    def __post_init__(self) -> None:
        self.stub = gov_grpc.GovernanceServiceStub(self.channel)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self.metadata)
            kwargs.setdefault("timeout", 20)
            return method(request, **kwargs)

        return call


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ended with (fails the test when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded; it should have been refused")


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The rich status details of an error: reason, field violations, preconditions."""
    status = rpc_status.from_call(error)
    found: dict[str, Any] = {"reason": "", "fields": {}, "preconditions": [], "metadata": {}}
    if status is None:
        return found
    for item in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
        ):
            if item.Is(kind.DESCRIPTOR):
                message = kind()
                item.Unpack(message)
                if isinstance(message, error_details_pb2.ErrorInfo):
                    found["reason"] = message.reason
                    found["metadata"] = dict(message.metadata)
                elif isinstance(message, error_details_pb2.BadRequest):
                    for violation in message.field_violations:
                        found["fields"][violation.field] = violation.description
                else:
                    found["preconditions"] += [
                        (v.type, v.subject, v.description) for v in message.violations
                    ]
    return found


def snapshot(runtime: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every governance table and the audit log (to prove nothing changed)."""

    def work(session: Session) -> dict[str, list[tuple[Any, ...]]]:
        meta = MetaData()
        meta.reflect(session.connection(), only=list(GOVERNANCE_TABLES))
        found = {}
        for name in GOVERNANCE_TABLES:
            table = meta.tables[name]
            rows = session.execute(select(table)).all()
            found[name] = sorted(tuple(str(v) for v in row) for row in rows)
        return found

    result: dict[str, list[tuple[Any, ...]]] = runtime.db.read_sync(work)
    return result


def count(runtime: Any, table: str, where: str = "1=1", **params: Any) -> int:
    def work(session: Session) -> int:
        return int(
            session.execute(
                text(f"SELECT count(*) FROM {table} WHERE {where}"), params
            ).scalar_one()
        )

    result: int = runtime.db.read_sync(work)
    return result


def bearer_claims(metadata: list[tuple[str, str]]) -> dict[str, Any]:
    """Claims of the PREFLIGHT_JWT in recorded call metadata (signature already verified
    by the receiver's interceptor; here we only read them)."""
    values = [v for k, v in metadata if k == "authorization"]
    assert len(values) == 1, metadata
    scheme, _, token = values[0].partition(" ")
    assert scheme == "Bearer"
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    claims["_typ"] = header.get("typ")
    return claims


async def settled(runtime: Any, within: float = 15.0) -> None:
    """Wait until the dispatcher has nothing pending or in flight (so snapshots are stable)."""
    await eventually(
        lambda: count(runtime, "outbox_commands", "state IN ('PENDING', 'SENT')"),
        lambda n: n == 0,
        within=within,
    )
