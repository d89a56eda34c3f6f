"""Metrics scraped over HTTP from a running plane, and health that follows real
readiness (database reachable, migrations applied)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from tests.ops.conftest import OPS_ENV
from tests.support.databases import PostgresDatabases, _libpq
from tests.support.servers import RunningPlane, start_plane, stop_plane

NODES = "/ppos.controlplane.noderegistry.v1.NodeRegistryService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def scrape_text(plane: RunningPlane) -> str:
    port = plane.server.metrics.port
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def scrape(plane: RunningPlane) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = scrape_text(plane)
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def metrics(plane: RunningPlane) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return await asyncio.to_thread(scrape, plane)


def requests(samples: dict, method: str, code: str) -> float:  # type: ignore[type-arg]
    return samples.get(("ppos_rpc_requests_total", (("code", code), ("method", method))), 0.0)


async def test_rpc_and_auth_metrics_are_scraped(ops_plane: RunningPlane) -> None:
    plane = ops_plane
    before = await metrics(plane)
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetNode(pb.GetNodeRequest(node_id="node_x"), metadata=plane.operator)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetNode(pb.GetNodeRequest(node_id="node_x"))  # no token
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetNode(
            pb.GetNodeRequest(node_id="node_x"), metadata=(("authorization", "Basic abc"),)
        )
    await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region="eu-west-1"), metadata=plane.operator
    )
    health = health_pb2_grpc.HealthStub(plane.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == SERVING
    watch.cancel()
    await asyncio.sleep(0.1)  # let the server see the stream end
    after = await metrics(plane)

    def delta(method: str, code: str) -> float:
        return requests(after, method, code) - requests(before, method, code)

    assert delta(f"{NODES}/GetNode", "NOT_FOUND") == 1
    assert delta(f"{NODES}/GetNode", "UNAUTHENTICATED") == 2
    assert delta(f"{NODES}/CreateEnrollment", "OK") == 1
    assert delta("/grpc.health.v1.Health/Watch", "CANCELLED") == 1

    def auth(reason: str) -> float:
        key = ("ppos_auth_failures_total", (("reason", reason),))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert auth("MISSING_CREDENTIAL") == 1
    assert auth("MALFORMED_CREDENTIAL") == 1
    count = ("ppos_rpc_duration_seconds_count", (("method", f"{NODES}/GetNode"),))
    assert after[count] - before.get(count, 0.0) == 3
    # every family the issue names is exposed, even before its first sample
    body = await asyncio.to_thread(scrape_text, plane)
    for family in (
        "ppos_rpc_requests_total",
        "ppos_rpc_duration_seconds",
        "ppos_auth_failures_total",
        "ppos_sync_records_total",
        "ppos_sync_bytes_total",
        "ppos_sync_lag_changes",
        "ppos_sync_lag_seconds",
        "ppos_sync_quarantined_total",
        "ppos_sync_sweep_duration_seconds",
        "ppos_watch_subscribers",
        "ppos_watch_dropped_subscribers_total",
        "ppos_watch_fanout_seconds",
        "ppos_outbox_depth",
        "ppos_outbox_deliveries_total",
    ):
        assert f"# HELP {family} " in body, family


async def health_reaches(plane: RunningPlane, wanted: int, service: str = "") -> None:
    """Follow Health.Watch until it reports `wanted` (bounded so a bug cannot hang)."""
    stub = health_pb2_grpc.HealthStub(plane.channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
    try:
        async with asyncio.timeout(30):
            async for reply in call:
                if reply.status == wanted:
                    return
    finally:
        call.cancel()


def alembic_rows(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                row[0]
                for row in connection.execute(text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        engine.dispose()


def set_alembic_rows(url: str, rows: list[str]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM alembic_version"))
            for row in rows:
                connection.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": row})
    finally:
        engine.dispose()


async def test_pending_migrations_turn_every_service_not_serving(ops_plane: RunningPlane) -> None:
    plane = ops_plane
    await health_reaches(plane, SERVING)
    applied = await asyncio.to_thread(alembic_rows, plane.database_url)
    assert applied
    await asyncio.to_thread(set_alembic_rows, plane.database_url, applied[1:])  # one head behind
    await health_reaches(plane, NOT_SERVING)
    for service in (
        "",
        "ppos.controlplane.governance.v1.GovernanceService",
        "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    ):
        reply = await health_pb2_grpc.HealthStub(plane.channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        assert reply.status == NOT_SERVING, service
    await asyncio.to_thread(set_alembic_rows, plane.database_url, applied)
    await health_reaches(plane, SERVING)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_unreachable_database_turns_health_not_serving(ops_plane: RunningPlane) -> None:
    plane = ops_plane
    name = plane.database_url.rsplit("/", 1)[-1]
    await health_reaches(plane, SERVING)
    admin = await asyncio.to_thread(
        psycopg.connect, _libpq(plane.database_url, "postgres"), autocommit=True
    )
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        await health_reaches(plane, NOT_SERVING)
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await health_reaches(plane, SERVING)
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()


@pytest.fixture
async def unmigrated_plane(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[RunningPlane]:
    """A plane told not to migrate, on an empty database."""
    if backend == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'empty.db'}", None
    else:
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        name = databases.create_empty()
        url, drop = databases.url_of(name), name
    running = await start_plane(
        token=canary_token,
        database_url=url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env={**OPS_ENV, "PPOS_MIGRATE_ON_START": "false"},
    )
    try:
        yield running
    finally:
        await stop_plane(running)
        if drop is not None:
            databases.drop(drop)


async def test_a_server_on_an_unmigrated_database_is_never_serving(
    unmigrated_plane: RunningPlane,
) -> None:
    stub = health_pb2_grpc.HealthStub(unmigrated_plane.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == NOT_SERVING
