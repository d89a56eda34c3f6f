"""One health sweep over a large fleet against a bare SQL UPDATE of the same rows.

Full: 100,000 registered READY nodes whose heartbeats are all older than the
TTL, on PostgreSQL and on SQLite. The subject is the real sweep
(`HealthSweeper.run`: the readiness UPDATE that also logs one node event per
node with a fresh resource version, the command timeout pass, pruning, the
audit entry); the baseline is the bare `UPDATE nodes SET readiness = ...` of
the same rows, nothing else. Both run against the same table, reset to the
same state (and vacuumed on PostgreSQL) before each run; the two alternate over
rounds and medians are compared. Target: the sweep takes at most 1 s on
PostgreSQL.

Nodes are seeded straight into the migrated schema (enrolling 100,000 nodes
over RPC would measure enrolment, not the sweep).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import bindparam, insert, text
from sqlalchemy.engine import make_url

from bench.harness import Mode, Result
from ppos.controlplane.core.logging import configure_logging
from ppos.controlplane.services.node_registry.health_sweep import HealthSweeper
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.base import UTCDateTime
from ppos.controlplane.storage.database import Database

DEFAULT_PG_URL = "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
BATCH = 5000
BARE_UPDATE = (
    "UPDATE nodes SET readiness = 'NOT_READY', readiness_reason = 'HeartbeatStale', "
    "last_transition_at = :now, updated_at = :now "
    "WHERE readiness = 'READY' AND last_heartbeat_at < :cutoff"
)
RESET = (
    "UPDATE nodes SET readiness = 'READY', readiness_reason = 'HeartbeatReady', "
    "last_heartbeat_at = :stale"
)


def _pg_admin() -> str:
    return os.environ.get("PPOS_BENCH_PG_URL", DEFAULT_PG_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def _database(backend: str) -> Iterator[Database]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'sweep.db'}", pool_size=2)
            try:
                migrate.upgrade(db.write_engine)
                yield db
            finally:
                db.close()
        return
    name = f"ppos_bench_sweep_{os.getpid()}"
    admin = psycopg.connect(_libpq(_pg_admin()), autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(make_url(_pg_admin()).set(database=name).render_as_string(False), pool_size=4)
    try:
        migrate.upgrade(db.write_engine)
        yield db
    finally:
        db.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _seed(db: Database, count: int, stale: dt.datetime) -> None:
    rows = [
        {
            "node_id": f"node_{i:026d}",
            "region": ("eu-west-1", "us-east-1", "ap-south-1")[i % 3],
            "cluster": f"c{i % 20}",
            "hostname": f"worker-{i}",
            "labels": {"gpu": "true" if i % 4 == 0 else "false", "tier": "edge"},
            "capacity_slots": 8,
            "slots_in_use": i % 8,
            "schedulable": True,
            "unschedulable_reason": "",
            "readiness": "READY",
            "readiness_reason": "HeartbeatReady",
            "last_transition_at": stale,
            "last_heartbeat_at": stale,
            "container_image": "registry.example/ppos/preflight-worker:7.4.1",
            "container_digest": "sha256:" + "a" * 64,
            "registered": True,
            "credential_generation": 1,
            "resource_version": 0,
            "generation": 2,
            "created_at": stale,
            "updated_at": stale,
        }
        for i in range(count)
    ]
    for start in range(0, count, BATCH):
        db.write_sync(lambda s, part=rows[start : start + BATCH]: s.execute(insert(NodeRow), part))


def _reset(db: Database, stale: dt.datetime) -> None:
    statement = text(RESET).bindparams(bindparam("stale", type_=UTCDateTime))
    db.write_sync(lambda s: s.execute(statement, {"stale": stale}))
    db.write_sync(lambda s: s.execute(text("DELETE FROM node_events")))
    if db.is_postgres:
        engine = db.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("VACUUM ANALYZE nodes"))
            connection.execute(text("VACUUM ANALYZE node_events"))


def _bare(db: Database) -> tuple[float, int]:
    now = dt.datetime.now(dt.UTC)
    statement = text(BARE_UPDATE).bindparams(
        bindparam("now", type_=UTCDateTime), bindparam("cutoff", type_=UTCDateTime)
    )
    started = time.perf_counter()
    changed = db.write_sync(
        lambda s: s.execute(statement, {"now": now, "cutoff": now - dt.timedelta(seconds=30)})
    ).rowcount  # type: ignore[attr-defined]
    return time.perf_counter() - started, int(changed)


async def _sweep(db: Database) -> tuple[float, int]:
    sweeper = HealthSweeper(db, NodeRegistrySettings(), on_change=lambda: None)
    started = time.perf_counter()
    result = await sweeper.run(wait=True)
    return time.perf_counter() - started, result.marked_not_ready


async def _measure(backend: str, count: int, rounds: int) -> tuple[list[float], list[float]]:
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)  # past the TTL, not the grace
    sweeps, bares = [], []
    with _database(backend) as db:
        await asyncio.to_thread(_seed, db, count, stale)
        for _ in range(rounds):
            await asyncio.to_thread(_reset, db, stale)
            seconds, changed = await asyncio.to_thread(_bare, db)
            if changed != count:
                raise RuntimeError(f"bare UPDATE changed {changed} of {count} rows")
            bares.append(seconds)
            await asyncio.to_thread(_reset, db, stale)
            seconds, changed = await _sweep(db)
            if changed != count:
                raise RuntimeError(f"sweep changed {changed} of {count} nodes")
            events = db.read_sync(lambda s: s.scalar(text("SELECT count(*) FROM node_events")))
            if events != count:
                raise RuntimeError(f"sweep logged {events} events for {count} nodes")
            sweeps.append(seconds)
    return sweeps, bares


async def run(mode: Mode) -> Result:
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    result = Result("node_sweep", mode)
    count, rounds = (5_000, 1) if mode == "smoke" else (100_000, 3)
    for backend, label in (("postgresql", "PostgreSQL"), ("sqlite", "SQLite")):
        sweeps, bares = await _measure(backend, count, rounds)
        sweep = result.figure(
            f"{label}: sweep of {count} nodes (median)", statistics.median(sweeps), "s"
        )
        bare = result.figure(
            f"{label}: bare UPDATE of the same rows (median)", statistics.median(bares), "s"
        )
        result.ratio(f"{label}: sweep / bare UPDATE", sweep, bare)
    result.target(f"PostgreSQL: sweep of {count} nodes (median)", "<=", 1.0)
    result.notes.append(
        f"{count} READY nodes with stale heartbeats, {rounds} alternating round(s); the sweep "
        "also logs one event and a new resource version per node; the machine is shared"
    )
    return result
