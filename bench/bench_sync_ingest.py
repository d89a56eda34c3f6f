"""Registry sync ingest: records of about 4 KB from the simulated registry over
gRPC into PostgreSQL, against psycopg COPY of the same rows into the same
table from memory, in the same run; the same sync into SQLite; and how close a
metered sweep holds to its configured rate.

Processes: the simulated registry (`ppos-preflight-sim --synthetic N`) and the
sync (`ppos-control-plane serve --service registrysync`) each run alone; this
process only starts sweeps, watches them and runs the COPY baseline. The sync
is unmetered for the ingest figures; its rate is the sweep's own start and end
times. COPY also runs with the default pglz compression to show what lz4 buys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
from sqlalchemy.engine import make_url

from bench.harness import Mode, Result
from bench.processes import cpu_seconds, free_port
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.services.registry_sync.synced_rows import COPY_COLUMNS, COPY_TYPES
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.database import Database
from ppos.preflightsim import samples
from ppos.preflightsim.feed import Feed

REGION = "eu-west-1"
SIZE = 4096
BIN = Path(sys.executable).parent
PG_URL = os.environ.get(
    "PPOS_TEST_PG_URL", "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
)
# How often a running sweep is polled (GetSweep).
SWEEP_POLL_SECONDS = 0.5
SYNC_TABLES = "synced_jobs, sync_quarantine, sync_sweep_regions, sync_sweeps, sync_regions"


@dataclass(frozen=True)
class Plan:
    records: int
    metered_records: int
    metered_rate: float
    metered_page: int
    rounds: int = 1


PLANS = {
    "smoke": Plan(records=5_000, metered_records=1_500, metered_rate=1_000, metered_page=50),
    "full": Plan(
        records=100_000, metered_records=20_000, metered_rate=2_000, metered_page=100, rounds=3
    ),
}


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run."""
    name = f"ppos_bench_sync_{os.getpid()}"
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url, pool_size=1)
    try:
        migrate.upgrade(db.write_engine)
    finally:
        db.close()
    try:
        yield url
    finally:
        with psycopg.connect(_libpq(PG_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Child:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited: {self.log.read_text()[-2000:]}")


def _wait_file(path: Path, child: Child, limit: float = 300) -> str:
    deadline = time.monotonic() + limit
    while not path.exists():
        child.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name} after {limit}s")
        time.sleep(0.05)
    return path.read_text().strip()


def _simulator(tmp: Path, jwks: Path, records: int, name: str) -> tuple[Child, int]:
    port_file = tmp / f"{name}.port"
    child = Child(
        [
            str(BIN / "ppos-preflight-sim"),
            "--region",
            REGION,
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--jwks-file",
            str(jwks),
            "--synthetic",
            str(records),
            "--synthetic-size",
            str(SIZE),
            "--log-level",
            "warning",
        ],
        dict(os.environ),
        tmp / f"{name}.log",
    )
    return child, int(_wait_file(port_file, child))


async def _serving(address: str, child: Child) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            child.check()
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} never became healthy")


@dataclass
class Plane:
    child: Child
    address: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


async def _plane(
    tmp: Path, data_dir: Path, database_url: str, sim_port: int, extra: dict[str, str], name: str
) -> Plane:
    token = "ppos_bench_" + secrets.token_urlsafe(32)
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.update(
        {
            "PPOS_LISTEN": address,
            "PPOS_CONTROL_TOKEN": token,
            "PPOS_DATABASE_URL": database_url,
            "PPOS_DATA_DIR": str(data_dir),
            "PPOS_LOG_LEVEL": "warning",
            "PPOS_LOG_FORMAT": "json",
            "PPOS_SYNC_REGIONS": f"{REGION}=127.0.0.1:{sim_port}",
            "PPOS_SYNC_INTERVAL": "0",
        }
    )
    env.update(extra)
    child = Child(
        [str(BIN / "ppos-control-plane"), "serve", "--service", "registrysync"],
        env,
        tmp / f"{name}.log",
    )
    await _serving(address, child)
    return Plane(child, address, token)


def _seconds(stamp: object) -> float:
    return stamp.seconds + stamp.nanos / 1e9  # type: ignore[attr-defined]


async def _sweep(plane: Plane) -> pb.Sweep:
    """Run one sweep to its end; the sweep carries its own start and end times.

    It is polled as an operator would, a few times a second: the times are the
    sweep's own, and each GetSweep costs the sync process CPU (authentication,
    metrics, a read), which at 20 polls a second was a tenth of what it spent.
    """
    async with grpc.aio.insecure_channel(plane.address) as channel:
        stub = pb_grpc.RegistrySyncServiceStub(channel)
        sweep = (await stub.StartSweep(pb.StartSweepRequest(), metadata=plane.metadata)).sweep
        while sweep.state in (pb.SWEEP_STATE_PENDING, pb.SWEEP_STATE_RUNNING):
            await asyncio.sleep(SWEEP_POLL_SECONDS)
            request = pb.GetSweepRequest(sweep_id=sweep.sweep_id)
            sweep = (await stub.GetSweep(request, metadata=plane.metadata)).sweep
    if sweep.state != pb.SWEEP_STATE_SUCCEEDED:
        raise RuntimeError(f"sweep ended {pb.SweepState.Name(sweep.state)}: {sweep.error}")
    return sweep


async def _metered_sweep(plane: Plane) -> tuple[pb.Sweep, list[tuple[float, int]]]:
    """A sweep and the (time, records) of every status change the stream sent during it."""
    samples_seen: list[tuple[float, int]] = []
    async with grpc.aio.insecure_channel(plane.address) as channel:
        stub = pb_grpc.RegistrySyncServiceStub(channel)
        watch = stub.WatchSyncStatus(pb.WatchSyncStatusRequest(), metadata=plane.metadata)
        await watch.read()  # the snapshot
        sweep_task = asyncio.create_task(_sweep(plane))

        async def follow() -> None:
            while True:
                reply = await watch.read()
                if reply is grpc.aio.EOF:
                    return
                samples_seen.append((time.perf_counter(), reply.status.records_synced))

        follower = asyncio.create_task(follow())
        sweep = await sweep_task
        await asyncio.sleep(0.3)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await follower
    return sweep, samples_seen


def _rows(count: int) -> list[tuple[object, ...]]:
    """Exactly the rows the sync stores for the simulator's synthetic feed."""
    feed = Feed(REGION)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for position, record in enumerate(
        samples.iter_records(region=REGION, count=count, size=SIZE, distinct=500), start=1
    ):
        proto = record.to_proto(region=REGION, cursor=feed.cursor(position))
        rows.append(
            (
                REGION,
                proto.job_id,
                proto.revision,
                proto.tenant_id,
                proto.queue_id,
                "JOB_STATUS_COMPLETED",
                "GOVERNANCE_STATE_COMPLETED",
                proto.node_id,
                proto.container_image,
                proto.create_time.ToNanoseconds(),
                proto.update_time.ToNanoseconds(),
                proto.canonical_payload,
                proto.canonical_payload_sha256,
                len(proto.canonical_payload),
                proto.cursor,
                "swp_bench",
                now,
            )
        )
    return rows


# The baseline is a bare COPY of the records' columns: no ids drawn, no chain.
BARE_COLUMNS = COPY_COLUMNS[COPY_COLUMNS.index("region") :]
BARE_TYPES = COPY_TYPES[COPY_COLUMNS.index("region") :]
# The synced tables refuse TRUNCATE (their triggers); the benchmark empties them
# between runs as their owner, with their triggers off inside its transaction.
GUARDED_TABLES = ("synced_jobs", "sync_quarantine")


def _empty(conn: psycopg.Connection[object]) -> None:
    for table in GUARDED_TABLES:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    conn.execute(f"TRUNCATE {SYNC_TABLES}")
    for table in GUARDED_TABLES:
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def _copy(url: str, rows: list[tuple[object, ...]], compression: str) -> tuple[float, int]:
    """COPY the rows into synced_jobs: (rows per second, table bytes)."""
    with psycopg.connect(_libpq(url)) as conn:
        _empty(conn)
        conn.execute(
            f"ALTER TABLE synced_jobs ALTER COLUMN canonical_payload SET COMPRESSION {compression}"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor:
            statement = f"COPY synced_jobs ({', '.join(BARE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types(BARE_TYPES)
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        size = conn.execute("SELECT pg_total_relation_size('synced_jobs')").fetchone()
        _empty(conn)
        conn.execute("ALTER TABLE synced_jobs ALTER COLUMN canonical_payload SET COMPRESSION lz4")
        conn.commit()
    return len(rows) / elapsed, int(size[0]) if size else 0


def _truncate(url: str) -> None:
    with psycopg.connect(_libpq(url)) as conn:
        _empty(conn)


def _count(url: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute("SELECT count(*) FROM synced_jobs").fetchone()
    return int(row[0]) if row else 0


def _steady_rate(points: list[tuple[float, int]]) -> float:
    """Records per second over the pages the stream reported, once the burst is spent.

    The bucket starts full (PPOS_SYNC_BURST of the rate), so the first pages
    pass at once; the rate is taken from the third page to the last.
    """
    moving = [(t, n) for t, n in points if n > 0][2:]
    if len(moving) < 2:
        return float("nan")
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / (t1 - t0)


async def run(mode: Mode) -> Result:
    plan = PLANS[mode]
    result = Result("sync_ingest", mode)
    unmetered = {"PPOS_SYNC_PAGE_RECORDS": "1000", "PPOS_SYNC_PAGE_BYTES": str(8 * 1024 * 1024)}
    with tempfile.TemporaryDirectory(prefix="ppos-bench-sync-") as name, _postgres() as pg_url:
        tmp = Path(name)
        data_dir = tmp / "data"
        jwks = data_dir / "jwks.json"
        KeyRing.from_directory(data_dir / "keys").write_jwks(jwks)
        sim, sim_port = _simulator(tmp, jwks, plan.records, "sim")
        children = [sim]
        try:
            rows = _rows(plan.records)
            plane = await _plane(tmp, data_dir, pg_url, sim_port, unmetered, "plane-pg")
            children.append(plane.child)
            # COPY and the sync alternate; medians are compared, so the drift of a
            # shared machine hits both alike.
            copies, syncs, sync_cpu, sim_cpu = [], [], [], []
            sizes = []
            for _ in range(plan.rounds):
                rate, size = _copy(pg_url, rows, "lz4")  # (it empties the tables first)
                copies.append(rate)
                sizes.append(size)
                _truncate(pg_url)
                cpu = (cpu_seconds(plane.child.popen.pid), cpu_seconds(sim.popen.pid))
                sweep = await _sweep(plane)
                sync_cpu.append(cpu_seconds(plane.child.popen.pid) - cpu[0])
                sim_cpu.append(cpu_seconds(sim.popen.pid) - cpu[1])
                if _count(pg_url) != plan.records or sweep.records_synced != plan.records:
                    raise RuntimeError("the PostgreSQL sweep did not store every record once")
                syncs.append(plan.records / (_seconds(sweep.end_time) - _seconds(sweep.start_time)))
            plane.child.stop()
            copy_pglz, size_pglz = _copy(pg_url, rows, "pglz")
            del rows
            copy_lz4 = statistics.median(copies)
            pg_rate = statistics.median(syncs)
            per_k = 1000 / plan.records * 1000
            result.figure("copy_lz4_rows_per_s", copy_lz4, "rows/s")
            result.figure("copy_pglz_rows_per_s", copy_pglz, "rows/s")
            result.figure("table_bytes_lz4", statistics.median(sizes), "B")
            result.figure("table_bytes_pglz", size_pglz, "B")
            result.figure("sync_postgresql_rows_per_s", pg_rate, "rows/s")
            result.figure("sync_postgresql_mb_per_s", pg_rate * SIZE / 1e6, "MB/s")
            result.figure(
                "sync_process_cpu_ms_per_1000_rows", statistics.median(sync_cpu) * per_k, "ms"
            )
            result.figure(
                "simulator_cpu_ms_per_1000_rows", statistics.median(sim_cpu) * per_k, "ms"
            )
            result.ratio("sync_vs_copy_postgresql", pg_rate, copy_lz4)
            result.target("sync_vs_copy_postgresql", ">=", 0.5)
            result.notes.append(
                "rounds (COPY rows/s, sync rows/s): "
                + ", ".join(f"({c:.0f}, {s:.0f})" for c, s in zip(copies, syncs, strict=True))
            )

            sqlite_url = f"sqlite:///{tmp / 'sqlite' / 'control-plane.db'}"
            plane = await _plane(tmp, data_dir, sqlite_url, sim_port, unmetered, "plane-sqlite")
            children.append(plane.child)
            sweep = await _sweep(plane)
            plane.child.stop()
            sqlite_rate = plan.records / (_seconds(sweep.end_time) - _seconds(sweep.start_time))
            result.figure("sync_sqlite_rows_per_s", sqlite_rate, "rows/s")
            result.ratio("sync_sqlite_vs_copy_postgresql", sqlite_rate, copy_lz4)
            sim.stop()

            metered_sim, metered_port = _simulator(tmp, jwks, plan.metered_records, "sim-metered")
            children.append(metered_sim)
            metered_url = f"sqlite:///{tmp / 'metered' / 'control-plane.db'}"
            metered_env = {
                "PPOS_SYNC_RECORDS_PER_SECOND": str(plan.metered_rate),
                "PPOS_SYNC_PAGE_RECORDS": str(plan.metered_page),
                "PPOS_SYNC_BURST": "100ms",
            }
            plane = await _plane(tmp, data_dir, metered_url, metered_port, metered_env, "plane-m")
            children.append(plane.child)
            sweep, points = await _metered_sweep(plane)
            whole = plan.metered_records / (_seconds(sweep.end_time) - _seconds(sweep.start_time))
            steady = _steady_rate(points)
            result.figure("metered_configured_rows_per_s", plan.metered_rate, "rows/s")
            result.figure("metered_steady_rows_per_s", steady, "rows/s")
            result.figure("metered_whole_sweep_rows_per_s", whole, "rows/s")
            result.figure("metered_rate_error", abs(steady / plan.metered_rate - 1), "x")
            result.target("metered_rate_error", "<=", 0.05)
        finally:
            for child in reversed(children):
                child.stop()
    result.notes.append(
        f"{plan.records:,} records of ~{SIZE} B (the simulator's synthetic preflight reports); "
        "sync unmetered, pages of 1000 records / 8 MiB, simulator and sync each in their own "
        "process; COPY from memory in this process into the same table"
    )
    result.notes.append(
        f"metered: {plan.metered_records:,} records at {plan.metered_rate:g} records/s, pages of "
        f"{plan.metered_page}; steady = third to last page seen on WatchSyncStatus"
    )
    return result
