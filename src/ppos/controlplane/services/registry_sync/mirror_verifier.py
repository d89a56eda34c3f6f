"""Verifying the mirror on demand (VerifyMirror) and on a schedule, with metrics.

Each region is read in its own read transaction (mirror_reads.py) and checked
by the pure verifier (mirror_check.py). On demand (VerifyMirror) every link,
checkpoint and the cursor are checked; the scheduled run also hashes every
payload against its digest, which reads every payload and takes several times
as long. A divergence is logged at error level
and counted (`ppos_sync_verify_divergences_total{region,kind}`); an intact
region sets `ppos_sync_verify_last_success_timestamp_seconds`. Every replica
verifies on its own schedule: it only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import Sequence

from sqlalchemy.orm import Session

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.core.metrics import SYNC_VERIFY_DIVERGENCES, SYNC_VERIFY_LAST_SUCCESS
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.services.registry_sync.mirror_check import RegionReport
from ppos.controlplane.services.registry_sync.mirror_reads import verify_stored_region
from ppos.controlplane.storage.database import Database

_log = get_logger("ppos.registrysync.verify")


class MirrorVerifier:
    def __init__(self, db: Database, keys: PublicKeySource, regions: Sequence[str]) -> None:
        self._db = db
        self._keys = keys
        self._regions = list(regions)
        self._task: asyncio.Task[None] | None = None

    async def verify(
        self, regions: Sequence[str], *, payloads: bool = False
    ) -> list[tuple[RegionReport, dt.datetime]]:
        """Each region checked in full, in order (`payloads`: every payload against its
        digest too); metrics and logs follow the outcome."""
        results = []
        for region in regions:
            work = functools.partial(self._verify_one, region=region, payloads=payloads)
            report = await self._db.read(work)
            at = utcnow()
            if report.divergence is None:
                SYNC_VERIFY_LAST_SUCCESS.labels(region).set(at.timestamp())
            else:
                SYNC_VERIFY_DIVERGENCES.labels(region, report.divergence.kind).inc()
                _log.error(
                    "sync.mirror_divergence",
                    region=region,
                    kind=report.divergence.kind,
                    table=report.divergence.table,
                    position=report.divergence.position,
                    row_id=report.divergence.row_id,
                    fields=list(report.divergence.fields),
                    detail=report.divergence.detail,
                )
            results.append((report, at))
        return results

    def _verify_one(self, session: Session, *, region: str, payloads: bool) -> RegionReport:
        return verify_stored_region(
            session, region, self._keys, postgres=self._db.is_postgres, payloads=payloads
        )

    def start(self, interval: float) -> None:
        if interval > 0 and self._regions and self._task is None:
            self._task = asyncio.create_task(self._every(interval), name="sync-verify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _every(self, interval: float) -> None:
        while True:
            try:
                await self.verify(self._regions, payloads=True)
            except Exception as exc:  # noqa: BLE001 - e.g. the database went away; try again later
                _log.warning("sync.verify_failed", error=type(exc).__name__, exc_info=exc)
            await asyncio.sleep(interval)
