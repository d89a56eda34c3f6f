"""The mirror of one region against what its registry serves now (source_readback.py).

Two read transactions: `mirror_bound` takes the region's cursor with the
newest sync sequence and quarantine id committed with it (a page commits its
rows and its cursor together, so these agree); after the registry has been
read up to that cursor, `compare` walks the synced rows up to that sequence
and the revision conflicts up to that id. Rows a sweep commits meanwhile lie
past the bound and are left for the next verification.

For each synced revision: the registry serves its digest (matching), another
one (CHANGED), or none (MISSING_AT_SOURCE); then every revision the registry
serves that no synced row holds is NOT_MIRRORED. Each revision conflict says
which of its two payloads the registry serves now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.controlplane.services.registry_sync.source_readback import Key, SourceIndex
from ppos.controlplane.services.registry_sync.verify import REVISION_CONFLICT
from ppos.preflight.v1 import job_pb2

CHANGED = "CHANGED"
MISSING_AT_SOURCE = "MISSING_AT_SOURCE"
NOT_MIRRORED = "NOT_MIRRORED"

SYNCED = "SYNCED"
QUARANTINED = "QUARANTINED"
BOTH = "BOTH"
OTHER = "OTHER"
NONE = "NONE"

MATCHES = "MATCHES"
DIVERGES = "DIVERGES"
UNAVAILABLE = "UNAVAILABLE"

BATCH = 2_000


@dataclass(frozen=True)
class MirrorBound:
    """The region's cursor and the newest rows committed with it."""

    cursor: str
    last_sequence: int
    last_quarantine_id: int


@dataclass(frozen=True)
class SourceDivergence:
    kind: str
    job_id: str
    revision: int
    sync_sequence: int = 0
    mirror_sha256: bytes = b""
    source_sha256: tuple[bytes, ...] = ()
    source_cursor: str = ""
    detail: str = ""


@dataclass
class Conflict:
    quarantine_id: int
    job_id: str
    revision: int
    quarantined_sha256: bytes
    synced_sha256: bytes = b""
    source_sha256: tuple[bytes, ...] = ()

    @property
    def source_holds(self) -> str:
        served = set(self.source_sha256)
        if not served:
            return NONE
        synced = self.synced_sha256 in served
        quarantined = self.quarantined_sha256 in served
        if synced and quarantined:
            return BOTH
        if synced:
            return SYNCED
        return QUARANTINED if quarantined else OTHER


@dataclass
class SourceReport:
    """One region compared with its registry; lists hold the first `limit` entries."""

    region: str
    state: str = MATCHES
    detail: str = ""
    cursor: str = ""
    source_records: int = 0
    source_pages: int = 0
    source_unverifiable: int = 0
    mirror_records: int = 0
    matching: int = 0
    changed: int = 0
    missing_at_source: int = 0
    not_mirrored: int = 0
    divergences: list[SourceDivergence] = field(default_factory=list)
    conflicts_total: int = 0
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def diverging(self) -> int:
        return self.changed + self.missing_at_source + self.not_mirrored


def mirror_bound(session: Session, region: str) -> MirrorBound:
    row = session.get(SyncRegionRow, region)
    last_sequence = session.scalar(
        select(func.max(SyncedJobRow.sync_sequence)).where(SyncedJobRow.region == region)
    )
    last_quarantine = session.scalar(
        select(func.max(QuarantinedRecordRow.quarantine_id)).where(
            QuarantinedRecordRow.region == region
        )
    )
    return MirrorBound(
        row.cursor if row is not None else "", last_sequence or 0, last_quarantine or 0
    )


def _conflicts(session: Session, region: str, bound: MirrorBound) -> dict[Key, list[Conflict]]:
    rows = session.execute(
        select(
            QuarantinedRecordRow.quarantine_id,
            QuarantinedRecordRow.job_id,
            QuarantinedRecordRow.revision,
            QuarantinedRecordRow.raw_record,
        )
        .where(
            QuarantinedRecordRow.region == region,
            QuarantinedRecordRow.reason == REVISION_CONFLICT,
            QuarantinedRecordRow.quarantine_id <= bound.last_quarantine_id,
        )
        .order_by(QuarantinedRecordRow.quarantine_id)
    )
    found: dict[Key, list[Conflict]] = {}
    for quarantine_id, job_id, revision, raw in rows:
        try:
            digest = job_pb2.JobRecord.FromString(bytes(raw)).canonical_payload_sha256
        except DecodeError:
            digest = b""  # quarantined as a conflict, so it parsed once; say nothing of it
        found.setdefault((job_id, revision), []).append(
            Conflict(quarantine_id, job_id, revision, digest)
        )
    return found


def _quarantine_reasons(session: Session, region: str, bound: MirrorBound) -> dict[Key, str]:
    """Why each revision the mirror quarantined was (first reason, conflicts aside)."""
    rows = session.execute(
        select(
            QuarantinedRecordRow.job_id,
            QuarantinedRecordRow.revision,
            QuarantinedRecordRow.reason,
            QuarantinedRecordRow.quarantine_id,
        )
        .where(
            QuarantinedRecordRow.region == region,
            QuarantinedRecordRow.reason != REVISION_CONFLICT,
            QuarantinedRecordRow.quarantine_id <= bound.last_quarantine_id,
        )
        .order_by(QuarantinedRecordRow.quarantine_id)
    )
    reasons: dict[Key, str] = {}
    for job_id, revision, reason, quarantine_id in rows:
        reasons.setdefault((job_id, revision), f"{reason} (quarantine id {quarantine_id})")
    return reasons


def _synced_rows(
    session: Session, region: str, bound: MirrorBound
) -> Iterable[tuple[int, str, int, bytes, str]]:
    result = session.execute(
        select(
            SyncedJobRow.sync_sequence,
            SyncedJobRow.job_id,
            SyncedJobRow.revision,
            SyncedJobRow.canonical_payload_sha256,
            SyncedJobRow.source_cursor,
        )
        .where(SyncedJobRow.region == region, SyncedJobRow.sync_sequence <= bound.last_sequence)
        .order_by(SyncedJobRow.sync_sequence)
        .execution_options(yield_per=BATCH)
    )
    for partition in result.partitions(BATCH):
        for sequence, job_id, revision, digest, cursor in partition:
            yield sequence, job_id, revision, bytes(digest), cursor


def _short(digest: bytes) -> str:
    return digest.hex()[:16]


class _Comparison:
    def __init__(self, report: SourceReport, index: SourceIndex, limit: int) -> None:
        self.report = report
        self.index = index
        self.limit = limit

    def note(self, divergence: SourceDivergence) -> None:
        if len(self.report.divergences) < self.limit:
            self.report.divergences.append(divergence)

    def synced_row(
        self, sequence: int, key: Key, digest: bytes, cursor: str
    ) -> tuple[bytes, ...] | None:
        """Compare one synced row; the digests the registry serves for it (None: none)."""
        report, index = self.report, self.index
        report.mirror_records += 1
        served = index.digests.pop(key, None)
        index.cursors.pop(key, None)
        job_id, revision = key
        if served is None:
            report.missing_at_source += 1
            why = index.unverifiable.get(key)
            detail = (
                f"the registry serves it only as a record that fails verification ({why})"
                if why
                else "not in the registry's feed up to the cursor"
            )
            self.note(
                SourceDivergence(
                    MISSING_AT_SOURCE, job_id, revision, sequence, digest, (), cursor, detail
                )
            )
            return None
        if digest in served:
            report.matching += 1
        else:
            report.changed += 1
            self.note(
                SourceDivergence(
                    CHANGED,
                    job_id,
                    revision,
                    sequence,
                    digest,
                    tuple(served),
                    cursor,
                    f"the mirror holds SHA-256 {_short(digest)}..., the registry serves "
                    + ", ".join(f"{_short(d)}..." for d in served),
                )
            )
        return tuple(served)

    def not_mirrored(self, quarantined: dict[Key, str]) -> None:
        report, index = self.report, self.index
        for key, served in index.digests.items():
            report.not_mirrored += 1
            if len(report.divergences) >= self.limit:
                continue
            why = quarantined.get(key)
            detail = (
                f"quarantined when synced: {why}"
                if why
                else "the registry serves it; the mirror has no row for it"
            )
            job_id, revision = key
            self.note(
                SourceDivergence(
                    NOT_MIRRORED,
                    job_id,
                    revision,
                    source_sha256=tuple(served),
                    source_cursor=index.cursors.get(key, ""),
                    detail=detail,
                )
            )


def compare(
    session: Session, region: str, bound: MirrorBound, index: SourceIndex, *, limit: int
) -> SourceReport:
    """The region's synced rows and conflicts (up to `bound`) against `index`.

    Consumes `index` (each revision found in the mirror is taken out of it, so
    what stays is what the mirror lacks).
    """
    report = SourceReport(
        region,
        cursor=bound.cursor,
        source_records=index.records,
        source_pages=index.pages,
        source_unverifiable=index.unverifiable_records,
    )
    conflicts = _conflicts(session, region, bound)
    comparison = _Comparison(report, index, limit)
    for sequence, job_id, revision, digest, cursor in _synced_rows(session, region, bound):
        key = (job_id, revision)
        served = comparison.synced_row(sequence, key, digest, cursor)
        for conflict in conflicts.get(key, ()):
            conflict.synced_sha256 = digest
            conflict.source_sha256 = served or ()
    for key, entries in conflicts.items():
        for conflict in entries:
            if not conflict.synced_sha256:  # its synced row is gone from the mirror
                conflict.source_sha256 = tuple(index.digests.get(key, ()))
    comparison.not_mirrored(_quarantine_reasons(session, region, bound))
    ordered = sorted(
        (c for entries in conflicts.values() for c in entries), key=lambda c: c.quarantine_id
    )
    report.conflicts_total = len(ordered)
    report.conflicts = ordered[:limit]
    if not index.reached_cursor:
        report.detail = (
            f"the registry's feed ended (at {index.ended_at!r}) before the mirror's cursor "
            f"{bound.cursor!r}"
        )
    if report.diverging or not index.reached_cursor:
        report.state = DIVERGES
    return report


def unavailable(region: str, bound: MirrorBound, why: str) -> SourceReport:
    return SourceReport(region, state=UNAVAILABLE, detail=why, cursor=bound.cursor)
