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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy import Engine, event
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


@dataclass
class Tally:
    """What a phase cost: wall time, this process's CPU (gateway, dispatcher and
    database client alike; not the PostgreSQL server's), statements and commits."""

    count: int
    seconds: float = 0.0
    cpu: float = 0.0
    statements: int = 0
    commits: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclass
class Counting:
    """Statements sent and transactions committed on a database's engines."""

    statements: int = 0
    commits: int = 0
    engines: list[Engine] = field(default_factory=list)

    def attach(self, *engines: Engine) -> None:
        for engine in {id(e): e for e in engines}.values():
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "commit", self._commit)
            self.engines.append(engine)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


class _Phase:
    def __init__(self, tally: Tally, counting: Counting) -> None:
        self.tally, self.counting = tally, counting

    def __enter__(self) -> Tally:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._statements, self._commits = self.counting.statements, self.counting.commits
        return self.tally

    def __exit__(self, *_: object) -> None:
        self.tally.seconds = time.perf_counter() - self._wall
        self.tally.cpu = time.process_time() - self._cpu
        self.tally.statements = self.counting.statements - self._statements
        self.tally.commits = self.counting.commits - self._commits


async def _gateway(verifier: PreflightJwtVerifier) -> tuple[grpc.aio.Server, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--region")
    gateway_cli.add_arguments(parser)
    server = grpc.aio.server(interceptors=[RequirePreflightJwt(verifier, gateway_audience(REGION))])
    gateway_cli.register(server, parser.parse_args(["--region", REGION]))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _direct(
    server: ControlPlaneServer, address: str, count: int, counting: Counting
) -> Tally:
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

    with _Phase(Tally(count), counting) as tally:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await channel.close()
    return tally


async def _through_outbox(server: ControlPlaneServer, count: int, counting: Counting) -> Tally:
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
    with _Phase(Tally(count), counting) as tally:
        running = asyncio.create_task(dispatcher.run(stop))
        while dispatcher.acknowledged < count:  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.005)
    stop.set()
    await running
    await receivers.close()
    return tally


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
) -> tuple[list[Tally], list[Tally]]:
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
    assert server.runtime is not None
    counting = Counting()
    counting.attach(server.runtime.db.write_engine, server.runtime.db.read_engine)
    direct, queued = [], []
    try:
        for _ in range(rounds):  # alternate, so drift of a shared machine hits both
            direct.append(await _direct(server, address, count, counting))
            queued.append(await _through_outbox(server, count, counting))
    finally:
        await server.stop(grace=1)
        await gateway.stop(0)
    return direct, queued


def _report(result: Result, label: str, direct: list[Tally], queued: list[Tally]) -> None:
    """Best rate of each (drift of a shared machine lowers both), every round's ratio,
    and the cost per delivery, which load moves far less: CPU and round trips."""
    best_direct = max(t.rate for t in direct)
    best_queued = max(t.rate for t in queued)
    result.figure(f"{label}: direct gateway calls/s", best_direct, "/s")
    result.figure(f"{label}: outbox deliveries/s (acknowledged)", best_queued, "/s")
    result.ratio(f"{label}: outbox / direct", best_queued, best_direct)
    result.target(f"{label}: outbox / direct", ">=", 0.5)
    for n, (d, q) in enumerate(zip(direct, queued, strict=True), 1):
        result.ratio(f"{label}: round {n} outbox / direct", q.rate, d.rate)
    cpu_direct = min(t.cpu / t.count for t in direct)
    cpu_queued = min(t.cpu / t.count for t in queued)
    result.figure(f"{label}: CPU per direct call", cpu_direct * 1000, "ms")
    result.figure(f"{label}: CPU per delivery", cpu_queued * 1000, "ms")
    last = queued[-1]
    result.figure(f"{label}: statements per delivery", last.statements / last.count, "")
    result.figure(f"{label}: commits per delivery", last.commits / last.count, "")


async def run(mode: Mode) -> Result:
    result = Result("outbox", mode)
    count, rounds = (400, 1) if mode == "smoke" else (3000, 3)
    configure_logging(level="warning", fmt="json")
    with tempfile.TemporaryDirectory() as tmp:
        direct, queued = await _measure(
            f"sqlite:///{tmp}/bench.db", Path(tmp) / "sq", count, rounds
        )
        _report(result, "SQLite", direct, queued)
        name, url = _pg_database()
        try:
            direct, queued = await _measure(url, Path(tmp) / "pg", count, rounds)
        finally:
            _drop_pg(name)
        _report(result, "PostgreSQL", direct, queued)
    result.notes.append(
        f"{count} ApplyQueuePolicy commands per round, {rounds} alternating round(s), best of "
        f"each; {CONCURRENCY} in flight; gateway simulated in-process; each delivery commits "
        "its acknowledgement and an audit entry; CPU is this process's (best round), not "
        "the PostgreSQL server's; statements and commits counted in the last round"
    )
    return result
