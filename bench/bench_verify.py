"""Verifying the mirror: N synced rows of ~4 KB on PostgreSQL, chains and checkpoints
recomputed, against a bare SELECT of the same rows' digests in the same run.

The rows are written as the sync writes them (commit_page: chained, one signed
checkpoint per page of 1,000). Verification as `pposctl sync verify` does it
(`payloads=False`): the server encodes every row's chained fields
(`record_send`), Python recomputes each link (one SHA-256 a row) and checks
the checkpoints' signatures and the cursor; the targets apply to it. The
scheduled verification's deeper pass, which also has the server hash every
payload (`sha256()`, reading every payload), is timed too. The baseline reads
only the digests, in the same order, through SQLAlchemy and the same driver.
"""

from __future__ import annotations

import datetime as dt
import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench.bench_sync_ingest import REGION, _postgres, _rows
from bench.harness import Mode, Result
from ppos.controlplane.security.keys import KeyRing, SigningKey, new_private_key, thumbprint
from ppos.controlplane.security.tokens import TokenMinter
from ppos.controlplane.services.registry_sync import sweep_records
from ppos.controlplane.services.registry_sync.checkpoints import CHECKPOINT_TYP
from ppos.controlplane.services.registry_sync.mirror_reads import verify_stored_region
from ppos.controlplane.services.registry_sync.pages import VerifiedPage, commit_page
from ppos.controlplane.services.registry_sync.verify import Accepted
from ppos.controlplane.storage.database import Database

PAGE = 1_000


@dataclass(frozen=True)
class Plan:
    records: int
    rounds: int


PLANS = {"smoke": Plan(records=3_000, rounds=1), "full": Plan(records=100_000, rounds=3)}


def _store(db: Database, count: int, minter: TokenMinter, keys: KeyRing) -> None:
    rows = _rows(count)
    now = dt.datetime.now(dt.UTC)
    db.write_sync(
        lambda s: (
            sweep_records.create_sweep(s, [REGION], started_by="bench", request_id=None, now=now),
            sweep_records.ensure_region(s, REGION, now),
        )
    )
    sign = functools.partial(minter.sign_statement, typ=CHECKPOINT_TYP)
    sweep_id = db.read_sync(lambda s: s.scalar(text("SELECT sweep_id FROM sync_sweeps")))
    for generation, start in enumerate(range(0, count, PAGE)):
        chunk = rows[start : start + PAGE]
        items = [
            Accepted(
                b"",
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                r[11],
                r[12],
                r[14],
            )  # type: ignore[arg-type]
            for r in chunk
        ]
        page = VerifiedPage(
            region=REGION,
            sweep_id=str(sweep_id),
            after_generation=generation,
            next_cursor=str(chunk[-1][14]),
            end_of_feed=start + PAGE >= count,
            remaining_changes=max(0, count - start - PAGE),
            wire_size=0,
            records=items,
        )
        db.write_sync(lambda s, p=page: commit_page(s, p, now, postgres=True, sign=sign, keys=keys))


def _load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _digests(db: Database) -> int:
    def work(session) -> int:  # type: ignore[no-untyped-def]
        result = session.execute(
            text(
                "SELECT canonical_payload_sha256 FROM synced_jobs WHERE region = :r "
                "ORDER BY sync_sequence"
            ),
            {"r": REGION},
        )
        return sum(1 for _ in result)

    return int(db.read_sync(work))


async def run(mode: Mode) -> Result:
    plan = PLANS[mode]
    result = Result("verify", mode)
    private = new_private_key()
    ring = KeyRing(SigningKey(thumbprint(private.public_key()), private, 0.0), {})
    minter = TokenMinter(ring, issuer="ppos-bench")
    with _postgres() as url:
        db = Database(url, pool_size=2)
        try:
            started = time.perf_counter()
            _store(db, plan.records, minter, ring)
            result.figure(
                "store_rows_per_s", plan.records / (time.perf_counter() - started), "rows/s"
            )
            verifies, selects, deep = [], [], []
            for _ in range(plan.rounds):
                started = time.perf_counter()
                if _digests(db) != plan.records:
                    raise RuntimeError("the baseline did not read every row")
                selects.append(time.perf_counter() - started)
                started = time.perf_counter()
                report = db.read_sync(
                    lambda s: verify_stored_region(s, REGION, ring, postgres=True, payloads=False)
                )
                verifies.append(time.perf_counter() - started)
                if report.divergence is not None or report.synced_rows != plan.records:
                    raise RuntimeError(f"a clean mirror did not verify: {report.divergence}")
                started = time.perf_counter()
                report = db.read_sync(
                    lambda s: verify_stored_region(s, REGION, ring, postgres=True, payloads=True)
                )
                deep.append(time.perf_counter() - started)
                if report.divergence is not None:
                    raise RuntimeError(f"a clean mirror did not verify: {report.divergence}")
        finally:
            db.close()
    verify_s, select_s = statistics.median(verifies), statistics.median(selects)
    result.figure("rows", plan.records, "rows")
    result.figure("verify_seconds", verify_s, "s")
    result.figure("select_digests_seconds", select_s, "s")
    result.ratio("verify_vs_select_digests", verify_s, select_s)
    result.figure("verify_with_payloads_seconds", statistics.median(deep), "s")
    result.ratio("verify_with_payloads_vs_select_digests", statistics.median(deep), select_s)
    result.target("verify_seconds", "<=", 2.0)
    result.target("verify_vs_select_digests", "<=", 3.0)
    result.notes.append(
        "rounds (verify s, with payloads s, select s): "
        + ", ".join(
            f"({v:.2f}, {c:.2f}, {s:.2f})" for v, c, s in zip(verifies, deep, selects, strict=True)
        )
    )
    result.notes.append(f"load average at the end: {_load_average()}")
    return result
