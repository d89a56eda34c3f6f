"""Outbox delivery against direct calls: what the transactional outbox costs.

Subject: N governance commands already committed to the outbox are delivered
by the real dispatcher (lease batch, call the gateway with a minted
PREFLIGHT_JWT, record the acknowledgement and its audit entry) until every one
is ACKNOWLEDGED. Baseline: the same N gateway calls made directly over the
same kind of minted channel with the same concurrency, no database at all.
Both talk to the simulated gateway in this process, in the same run; the
ratio is deliveries/s over calls/s, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import grpc
import psycopg
from sqlalchemy.engine import make_url

from bench.harness import Mode, Result
from ppos.controlplane.core.logging import configure_logging
from ppos.controlplane.runtime.cli import load_settings
from ppos.controlplane.runtime.composition import governance_deps
from ppos.controlplane.runtime.server import ControlPlaneServer
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.peers import caller_identity, gateway_audience
from ppos.controlplane.security.principal import internal
from ppos.controlplane.services.governance.outbox import commands
from ppos.controlplane.services.governance.outbox.dispatcher import Dispatcher
from ppos.controlplane.services.governance.outbox.receivers import Receivers
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb
from ppos.preflightsim import gateway_cli
from ppos.preflightsim.auth import RequirePreflightJwt
from ppos.preflightsim.jwks import RefreshingJwks
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier

REGION = "eu-west-1"
# Calls in flight, direct and through the outbox alike (the dispatcher's per-gateway
# limit, PPOS_OUTBOX_TARGET_CONCURRENCY, at its default).
CONCURRENCY = int(os.environ.get("PPOS_BENCH_OUTBOX_IN_FLIGHT", "64"))
PG_URL = os.environ.get(
    "PPOS_BENCH_PG_URL",
    os.environ.get(
        "PPOS_TEST_PG_URL", "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
    ),
)


def _command(index: int) -> commands.Command:
    key = f"bench:{index}:{secrets.token_hex(4)}"
    return commands.Command(
        target=commands.gateway_target(REGION),
        method=commands.gateway_method("ApplyQueuePolicy"),
        request=gw_pb.ApplyQueuePolicyRequest(
            header=gw_pb.CommandHeader(idempotency_key=key, reason="bench"),
            tenant_id="bench",
            queue_id=f"queue-{index}",
            capacity=4,
            state=gw_pb.QUEUE_STATE_ACTIVE,
            generation=1,
        ),
        idempotency_key=key,
        subject=f"queue/bench/queue-{index}",
    )


async def _gateway(verifier: PreflightJwtVerifier) -> tuple[grpc.aio.Server, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--region")
    gateway_cli.add_arguments(parser)
    server = grpc.aio.server(interceptors=[RequirePreflightJwt(verifier, gateway_audience(REGION))])
    gateway_cli.register(server, parser.parse_args(["--region", REGION]))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _direct(server: ControlPlaneServer, address: str, count: int) -> float:
    assert server.runtime is not None
    channel = open_channel(
        address,
        server.runtime.minter,
        audience=gateway_audience(REGION),
        subject=caller_identity("governance"),
    )
    batch = [_command(i) for i in range(count)]
    call = channel.unary_unary(
        commands.gateway_method("ApplyQueuePolicy"),
        request_serializer=None,
        response_deserializer=gw_pb.ApplyQueuePolicyResponse.FromString,
    )
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for command in batch:
        queue.put_nowait(command.request.SerializeToString())

    async def worker() -> None:
        while not queue.empty():
            await call(queue.get_nowait(), timeout=10)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return count / elapsed


async def _through_outbox(server: ControlPlaneServer, count: int) -> float:
    runtime = server.runtime
    assert runtime is not None
    actor = internal("bench")
    runtime.db.write_sync(
        lambda s: [commands.enqueue(s, _command(i), actor=actor) for i in range(count)]
    )
    deps = governance_deps(runtime)
    receivers = Receivers(deps)
    dispatcher = Dispatcher(deps, receivers, owner="bench")
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(dispatcher.run(stop))
    while dispatcher.acknowledged < count:  # noqa: ASYNC110 - a counter, no event to wait on
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    await receivers.close()
    return count / elapsed


def _pg_database() -> tuple[str, str]:
    name = f"ppos_bench_outbox_{os.getpid()}"
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return name, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop_pg(name: str) -> None:
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _measure(
    database_url: str, data_dir: Path, count: int, rounds: int
) -> tuple[float, float]:
    ring = KeyRing.from_directory(data_dir / "keys")
    jwks = ring.jwks()
    verifier = PreflightJwtVerifier(RefreshingJwks(lambda: jwks), issuer="ppos-control-plane")
    gateway, address = await _gateway(verifier)
    settings = load_settings(
        None,
        {
            "PPOS_LISTEN": "127.0.0.1:0",
            "PPOS_CONTROL_TOKEN": "ppos_bench_" + secrets.token_urlsafe(32),
            "PPOS_DATABASE_URL": database_url,
            "PPOS_DATA_DIR": str(data_dir),
            "PPOS_SERVICES": "governance",
            "PPOS_GATEWAYS": f"{REGION}={address}",
            "PPOS_GOVERNANCE_BACKGROUND": "",
            "PPOS_OUTBOX_CONCURRENCY": str(CONCURRENCY),
            "PPOS_OUTBOX_TARGET_CONCURRENCY": str(CONCURRENCY),
            "PPOS_OUTBOX_BATCH_SIZE": "64",
        },
    )
    server = ControlPlaneServer(settings)
    await server.start()
    direct, queued = [], []
    try:
        for _ in range(rounds):  # alternate, so drift of a shared machine hits both
            direct.append(await _direct(server, address, count))
            queued.append(await _through_outbox(server, count))
    finally:
        await server.stop(grace=1)
        await gateway.stop(0)
    return max(direct), max(queued)


async def run(mode: Mode) -> Result:
    result = Result("outbox", mode)
    count, rounds = (400, 1) if mode == "smoke" else (3000, 3)
    configure_logging(level="warning", fmt="json")
    with tempfile.TemporaryDirectory() as tmp:
        direct, queued = await _measure(
            f"sqlite:///{tmp}/bench.db", Path(tmp) / "sq", count, rounds
        )
        result.figure("SQLite: direct gateway calls/s", direct, "/s")
        result.figure("SQLite: outbox deliveries/s (acknowledged)", queued, "/s")
        result.ratio("SQLite: outbox / direct", queued, direct)
        name, url = _pg_database()
        try:
            direct, queued = await _measure(url, Path(tmp) / "pg", count, rounds)
        finally:
            _drop_pg(name)
        result.figure("PostgreSQL: direct gateway calls/s", direct, "/s")
        result.figure("PostgreSQL: outbox deliveries/s (acknowledged)", queued, "/s")
        result.ratio("PostgreSQL: outbox / direct", queued, direct)
    result.notes.append(
        f"{count} ApplyQueuePolicy commands per round, {rounds} alternating round(s), best of "
        f"each; {CONCURRENCY} in flight; gateway simulated in-process; each delivery commits "
        "its acknowledgement and an audit entry"
    )
    return result
