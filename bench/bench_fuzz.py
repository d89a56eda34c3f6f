"""The fuzz campaign of tests/fuzz at volume: 20,000 requests per database
(--full; 1,000 in --smoke) through a real control plane on SQLite and on
PostgreSQL, as no one, as a node and as an operator.

Printed per database: requests, how many answered each status code, requests
per second, and the distinct failure places (method, code, what is wrong, the
start of the message); the figures are counts, the failures are notes. There is
no baseline: what this measures is what breaks, and how often.
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import time
from pathlib import Path

from bench.harness import Mode, Result
from ppos.controlplane.core.logging import configure_logging
from tests.fuzz.campaign import FUZZ_ENV, run_campaign
from tests.fuzz.runner import Report
from tests.support.databases import PostgresDatabases, SqliteDatabases, pg_admin_url
from tests.support.servers import start_plane, stop_plane

REQUESTS = {"smoke": 1_000, "full": 20_000}
FAILURE_LINES = 40


async def _campaign(database_url: str, data_dir: Path, requests: int, seed: int) -> Report:
    token = "ppos_bench_" + secrets.token_urlsafe(24)
    registry = configure_logging(level="critical", fmt="json", stream=io.StringIO())
    plane = await start_plane(
        token=token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=registry,
        extra_env=FUZZ_ENV,
    )
    try:
        return await run_campaign(
            address=plane.address,
            operator=plane.operator,
            database_url=database_url,
            requests=requests,
            seed=seed,
            concurrency=16,
            tag="bench",
        )
    finally:
        await stop_plane(plane)


def _record(result: Result, backend: str, report: Report, seconds: float) -> None:
    result.figure(f"{backend}: requests", report.requests, "")
    result.figure(f"{backend}: requests/s", report.requests / seconds, "/s")
    for code, count in sorted(report.codes.items()):
        result.figure(f"{backend}: {code}", count, "")
    result.figure(f"{backend}: failing replies", sum(report.failures.values()), "")
    places = report.places()
    result.figure(f"{backend}: distinct failure places", len(places), "")
    for key, count, methods in places[:FAILURE_LINES]:
        result.notes.append(f"{backend}: {count}x {key} (in {', '.join(methods)})")
    if len(places) > FAILURE_LINES:
        result.notes.append(f"{backend}: and {len(places) - FAILURE_LINES} more places")


async def run(mode: Mode) -> Result:
    result = Result("fuzz", mode)
    requests = REQUESTS[mode]
    seed = int(os.environ.get("PPOS_FUZZ_SEED", "18"))
    result.notes.append(f"seed {seed} (PPOS_FUZZ_SEED)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sqlite = SqliteDatabases(root / "template")
        work = root / "sqlite"
        work.mkdir()
        started = time.perf_counter()
        report = await _campaign(sqlite.create(work), work / "data", requests, seed)
        _record(result, "sqlite", report, time.perf_counter() - started)

        postgres = PostgresDatabases(pg_admin_url())
        name = postgres.create()
        try:
            started = time.perf_counter()
            report = await _campaign(postgres.url_of(name), root / "pg-data", requests, seed)
            _record(result, "postgresql", report, time.perf_counter() - started)
        finally:
            postgres.drop(name)
            postgres.close()
    return result
