"""SIGKILL the sync process at random points of a large sweep, restart it, repeat:
at the end every record is present once, every digest matches the source and
the cursor equals the source's end. Real processes: `ppos-preflight-sim` and
`ppos-control-plane serve --service registrysync`."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.services.registry_sync.mirror_reads import verify_stored_region
from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.preflightsim import samples
from ppos.preflightsim.feed import Feed
from tests.registry_sync.harness import FAST_SYNC_ENV, free_port
from tests.support.canary import scan_files
from tests.support.databases import runtime_url

pytestmark = pytest.mark.slow

REGION = "eu-west-1"
RECORDS = 2400
SIZE = 2048
BIN = Path(sys.executable).parent
KILLS = 12


class Process:
    """A child process with its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(30)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


def wait_for(condition, limit: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll (the limit only stops a hung test; it asserts nothing about speed)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def simulator(tmp_path: Path, jwks: Path) -> Iterator[int]:
    port_file = tmp_path / "sim.port"
    sim = Process(
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
            str(RECORDS),
            "--synthetic-size",
            str(SIZE),
            "--log-level",
            "warning",
        ],
        dict(os.environ),
        tmp_path / "sim.log",
    )
    try:
        wait_for(port_file.exists, what="the simulator's port")
        yield int(port_file.read_text())
    finally:
        sim.stop()


def plane_env(
    database_url: str, data_dir: Path, sim_port: int, token: str, listen_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FAST_SYNC_ENV)
    env.update(
        {
            "PPOS_LISTEN": f"127.0.0.1:{listen_port}",
            "PPOS_CONTROL_TOKEN": token,
            "PPOS_DATABASE_URL": runtime_url(database_url),  # the services' login
            "PPOS_DATA_DIR": str(data_dir),
            "PPOS_DB_POOL_SIZE": "4",
            "PPOS_LOG_FORMAT": "json",
            "PPOS_SYNC_REGIONS": f"{REGION}=127.0.0.1:{sim_port}",
            "PPOS_SYNC_INTERVAL": "100ms",  # each restart sweeps again by itself
            "PPOS_SYNC_PAGE_RECORDS": "25",
            "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "500",
            "PPOS_SYNC_BURST": "50ms",
        }
    )
    return env


def serve(env: dict[str, str], log: Path) -> Process:
    return Process(
        [str(BIN / "ppos-control-plane"), "serve", "--service", "registrysync"], env, log
    )


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(SyncedJobRow)) or 0)


def cursor(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.scalar(select(SyncRegionRow.cursor)) or "")


def verify_mirror(engine: Engine, data_dir: Path) -> None:
    source = {
        (r.job_id, r.revision): hashlib.sha256(r.payload).digest()
        for r in samples.generate(region=REGION, count=RECORDS, size=SIZE, distinct=500)
    }
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                SyncedJobRow.job_id,
                SyncedJobRow.revision,
                SyncedJobRow.canonical_payload,
                SyncedJobRow.canonical_payload_sha256,
            )
        ).all()
        quarantined = connection.scalar(select(func.count()).select_from(QuarantinedRecordRow))
    keys = [(job_id, revision) for job_id, revision, _, _ in rows]
    assert len(keys) == len(set(keys)), "a record stored twice"
    assert set(keys) == set(source), "a record lost"
    for job_id, revision, payload, stored_digest in rows:
        assert bytes(stored_digest) == source[(job_id, revision)]
        assert hashlib.sha256(bytes(payload)).digest() == source[(job_id, revision)]
    assert quarantined == 0
    assert cursor(engine) == Feed(REGION).cursor(RECORDS)
    # The chain, through every kill, checked against the checkpoints the plane signed.
    keys = KeyRing.from_directory(data_dir / "keys")
    with Session(engine) as session:
        report = verify_stored_region(
            session, REGION, keys, postgres=engine.dialect.name == "postgresql"
        )
    assert report.divergence is None, report.divergence
    assert report.synced_rows == len(source)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    database_url: str,
    data_dir: Path,
    simulator: int,
    tmp_path: Path,
    canary_token: str,
) -> None:
    rng = random.Random(int(os.environ.get("PPOS_CRASH_SEED", "20261128")))
    env = plane_env(database_url, data_dir, simulator, canary_token, free_port())
    engine = create_engine(database_url)
    log = tmp_path / "plane.log"
    proc: Process | None = None
    try:
        progress = [0]
        for round_ in range(KILLS):
            proc = serve(env, log)
            if round_ % 4 == 3:
                # Somewhere in start-up: migrations, leadership, recovery, the first page.
                time.sleep(rng.uniform(0.2, 1.5))
            else:
                before = stored(engine)
                wait_for(
                    lambda b=before, p=proc: stored(engine) > b or not p.alive,
                    what="sync progress",
                )
                assert proc.alive, log.read_text()[-2000:]
                time.sleep(rng.uniform(0.0, 0.25))  # anywhere in the pages that follow
            proc.kill()
            progress.append(stored(engine))
        assert progress[-1] < RECORDS, "the sweep finished before the last kill: kill sooner"
        assert sorted(progress) == progress  # nothing committed is ever lost
        proc = serve(env, log)
        wait_for(lambda: cursor(engine) == Feed(REGION).cursor(RECORDS), what="the head")
        assert proc.stop() == 0
        verify_mirror(engine, data_dir)
    finally:
        if proc is not None and proc.alive:
            proc.kill()
        engine.dispose()
    assert scan_files(tmp_path, canary_token) == [], "control token in a log or file"


def test_a_follower_takes_over_when_the_leader_is_killed(
    database_url: str,
    data_dir: Path,
    simulator: int,
    tmp_path: Path,
    canary_token: str,
) -> None:
    engine = create_engine(database_url)
    log = tmp_path / "plane.log"
    started: list[Process] = []

    def env() -> dict[str, str]:
        # Slow enough (16 s for the sweep) that the leader is still at work when the
        # follower has started, even on a machine busy enough to take seconds for that.
        return {
            **plane_env(database_url, data_dir, simulator, canary_token, free_port()),
            "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "150",
        }

    try:
        leader = serve(env(), log)
        started.append(leader)
        wait_for(lambda: stored(engine) > 100, what="the leader's progress")
        follower = serve(env(), log)
        started.append(follower)
        wait_for(lambda: log.read_bytes().count(b'"event": "server.started"') == 2, what="both")
        leader.kill()
        assert stored(engine) < RECORDS
        wait_for(lambda: cursor(engine) == Feed(REGION).cursor(RECORDS), what="the head")
        assert follower.stop() == 0
        verify_mirror(engine, data_dir)
    finally:
        for proc in started:
            if proc.alive:
                proc.kill()
        engine.dispose()
    assert log.read_bytes().count(b'"event": "sync.lead_taken"') == 2  # leader, then follower
    assert scan_files(tmp_path, canary_token) == [], "control token in a log or file"
