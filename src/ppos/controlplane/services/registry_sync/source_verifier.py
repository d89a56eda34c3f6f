"""VerifyMirror's `against_source`: a region's mirror compared with its registry.

Reads the bound (cursor, newest rows) in one read transaction, the registry's
feed up to that cursor over the external contract (source_readback.py), then
compares in a second read transaction (source_compare.py). It only reads: an
unreachable registry gives an UNAVAILABLE comparison naming the region, and
nothing changes anywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.core.metrics import SYNC_VERIFY_DIVERGENCES
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync import source_compare
from ppos.controlplane.services.registry_sync.source_compare import SourceReport
from ppos.controlplane.services.registry_sync.source_readback import (
    SourceReader,
    SourceUnavailable,
)
from ppos.controlplane.storage.database import Database

_log = get_logger("ppos.registrysync.verify_source")


class SourceVerifier:
    def __init__(self, db: Database, readers: Mapping[str, SourceReader]) -> None:
        self._db = db
        self._readers = dict(readers)

    async def compare(self, region: str, *, limit: int) -> SourceReport:
        bound = await self._db.read(functools.partial(source_compare.mirror_bound, region=region))
        reader = self._readers[region]
        try:
            index = await reader.read(bound.cursor)
        except SourceUnavailable as exc:
            why = f"the {region} registry at {reader.address} could not be read: {exc}"
            _log.warning("sync.source_unavailable", region=region, error=str(exc))
            return source_compare.unavailable(region, bound, why)
        report = await self._db.read(
            lambda session: source_compare.compare(session, region, bound, index, limit=limit)
        )
        diverged = report.state == source_compare.DIVERGES
        if diverged:
            # Beside the chain's kinds: alerts on the counter catch this one too.
            SYNC_VERIFY_DIVERGENCES.labels(region, "SOURCE").inc()
        (_log.error if diverged else _log.info)(
            "sync.source_compared",
            region=region,
            state=report.state,
            records=report.mirror_records,
            changed=report.changed,
            missing_at_source=report.missing_at_source,
            not_mirrored=report.not_mirrored,
            conflicts=report.conflicts_total,
        )
        return report


def to_proto(report: SourceReport) -> pb.SourceComparison:
    return pb.SourceComparison(
        state=pb.SourceCheckState.Value(f"SOURCE_CHECK_STATE_{report.state}"),
        detail=report.detail,
        cursor=report.cursor,
        source_records=report.source_records,
        source_pages=report.source_pages,
        source_unverifiable=report.source_unverifiable,
        mirror_records=report.mirror_records,
        matching=report.matching,
        changed=report.changed,
        missing_at_source=report.missing_at_source,
        not_mirrored=report.not_mirrored,
        divergences=[
            pb.SourceDivergence(
                kind=pb.SourceDivergenceKind.Value(f"SOURCE_DIVERGENCE_KIND_{d.kind}"),
                job_id=d.job_id,
                revision=d.revision,
                sync_sequence=d.sync_sequence,
                mirror_sha256=d.mirror_sha256,
                source_sha256=list(d.source_sha256),
                source_cursor=d.source_cursor,
                detail=d.detail,
            )
            for d in report.divergences
        ],
        conflicts_total=report.conflicts_total,
        conflicts=[
            pb.RevisionConflict(
                quarantine_id=c.quarantine_id,
                job_id=c.job_id,
                revision=c.revision,
                synced_sha256=c.synced_sha256,
                quarantined_sha256=c.quarantined_sha256,
                source_sha256=list(c.source_sha256),
                source_holds=pb.SourceHolds.Value(f"SOURCE_HOLDS_{c.source_holds}"),
            )
            for c in report.conflicts
        ],
    )
