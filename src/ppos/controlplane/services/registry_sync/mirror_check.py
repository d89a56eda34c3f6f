"""Verification of the mirror: recompute a region's chains and check its signed checkpoints.

Pure: it is handed the rows (in id order, each as the bytes its link hashes:
mirror_reads.py), a way to read one row in full, the stored checkpoints and
the region's cursor, and names the first divergence it finds:

- CHANGED: a row's fields no longer give its link (the changed fields named
  from the per-field checks; the payload's bytes against their digest);
- DELETED: a gap in a chain's positions;
- INSERTED: a row that repeats a position, carries no chain, or lies past the
  last signed checkpoint;
- TRUNCATED: a chain shorter than a signed checkpoint says it was;
- REWRITTEN: a chain that links but disagrees with a signed checkpoint's head
  (rewritten from some row on by someone who cannot sign);
- FORGED_CHECKPOINT: a checkpoint whose signature does not verify;
- UNVERIFIABLE_CHECKPOINT: the newest checkpoint is signed by a key no longer
  accepted (the next page that changes the region signs a fresh one);
- CURSOR_MOVED: the region's cursor is not the one its last checkpoint left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ppos.controlplane.core import hashchain
from ppos.controlplane.security.claims import TokenRejected
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.security.statements import verify_statement
from ppos.controlplane.services.registry_sync import chain
from ppos.controlplane.services.registry_sync.chain import QUARANTINE, SYNCED, ChainKind, Tip
from ppos.controlplane.services.registry_sync.checkpoints import (
    CHECKPOINT_TYP,
    Checkpoint,
    StoredCheckpoint,
)

CHANGED = "CHANGED"
DELETED = "DELETED"
INSERTED = "INSERTED"
TRUNCATED = "TRUNCATED"
REWRITTEN = "REWRITTEN"
FORGED_CHECKPOINT = "FORGED_CHECKPOINT"
CURSOR_MOVED = "CURSOR_MOVED"
UNVERIFIABLE_CHECKPOINT = "UNVERIFIABLE_CHECKPOINT"

# A stored row read in full (every column, the chain columns, chain_version).
Row = Mapping[str, object]
# A row as the walk reads it: (id, position, stored link, the bytes its link
# hashes after the previous link, its payload matches its digest).
Link = tuple[int, int | None, bytes | None, bytes | None, bool]
# Reads one row in full, to name what changed in it (only once a row breaks the chain).
Details = Callable[[ChainKind, int], Row]


@dataclass(frozen=True)
class Divergence:
    kind: str
    table: str = ""
    position: int = 0
    row_id: int = 0
    job_id: str = ""
    revision: int = 0
    fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class RegionReport:
    region: str
    synced_rows: int = 0
    quarantined_rows: int = 0
    checkpoints: int = 0
    synced_head: bytes = hashchain.GENESIS
    divergence: Divergence | None = None

    @property
    def intact(self) -> bool:
        return self.divergence is None


@dataclass
class _Walk:
    """One chain walked: its tip, the links at the positions checkpoints name, first fault."""

    kind: ChainKind
    wanted: set[int]
    position: int = 0
    row_id: int = 0
    chain: bytes = hashchain.GENESIS
    links: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    divergence: Divergence | None = None
    # The link before the previous row: tells a forged row from the genuine one after it.
    before_previous: bytes = hashchain.GENESIS
    previous_id: int | None = None

    @property
    def tip(self) -> Tip:
        return Tip(self.position, self.row_id, self.chain)


def _describe(
    kind: ChainKind, row: Row, what: str, *, fields: Sequence[str] = (), detail: str = ""
) -> Divergence:
    position = row.get("chain_position")
    return Divergence(
        kind=what,
        table=kind.table,
        position=int(position) if isinstance(position, int) else 0,
        row_id=int(str(row[kind.id_column])),
        job_id=str(row.get("job_id", "")),
        revision=int(str(row.get("revision", 0))),
        fields=tuple(fields),
        detail=detail,
    )


def _diagnose(walk: _Walk, link: Link, details: Details) -> Divergence:
    """What is wrong with the row that broke the walk, read in full."""
    kind, expected = walk.kind, walk.position + 1
    row_id, position, stored, encoding, intact = link
    row = details(kind, row_id)
    content = "canonical_payload" if kind is SYNCED else "raw_record"
    if stored is None or position is None or encoding is None:
        return _describe(kind, row, INSERTED, fields=("chain",), detail="the row carries no chain")
    if position > expected:
        return _describe(
            kind, row, DELETED, detail=f"positions {expected}..{position - 1} are missing before it"
        )
    if position < expected:
        return _repeated(walk, row, link, details)
    if hashlib.sha256(walk.chain + encoding).digest() != stored:
        version = row.get("chain_version")
        changed = chain.changed_fields(kind, version, row)
        other = chain.V1 if version == chain.V2 else chain.V2
        if hashlib.sha256(walk.chain + chain.encoding(kind, other, row)).digest() == stored:
            changed = ["chain_version"]  # the row links in the other encoding
        if not changed and walk.previous_id is not None:
            # Its own fields are as sealed: the row before it was replaced by one
            # with a link of its own (or this row's chain column was edited).
            return _describe(
                kind,
                details(kind, walk.previous_id),
                REWRITTEN,
                fields=("chain",),
                detail="the next row no longer links to it: replaced, with a link of its own",
            )
        return _describe(
            kind,
            row,
            CHANGED,
            fields=changed or ("chain",),
            detail="its fields no longer give its link",
        )
    if not intact:
        return _describe(
            kind, row, CHANGED, fields=(content,), detail="the bytes do not match their digest"
        )
    return _describe(kind, row, CHANGED, fields=("chain",), detail="the walk stopped at it")


def _repeated(walk: _Walk, row: Row, link: Link, details: Details) -> Divergence:
    """A position seen twice: the one that does not link to its predecessor is the forgery."""
    kind, position = walk.kind, link[1]
    if (
        walk.previous_id is not None
        and position == walk.position
        and link[3] is not None
        and hashlib.sha256(walk.before_previous + link[3]).digest() == link[2]
    ):
        return _describe(
            kind,
            details(kind, walk.previous_id),
            INSERTED,
            detail=f"a second row at position {position}",
        )
    return _describe(kind, row, INSERTED, detail=f"a second row at position {position}")


def walk_chain(kind: ChainKind, rows: Iterable[Link], wanted: set[int], details: Details) -> _Walk:
    """Each row's link recomputed from the previous one; the first row that breaks it diagnosed.

    The loop does one SHA-256 a row and nothing else that allocates: this is
    where verification spends its Python time.
    """
    walk = _Walk(kind, wanted)
    sha256 = hashlib.sha256
    position, chain_, row_id, before = walk.position, walk.chain, walk.row_id, walk.before_previous
    for link in rows:
        row_position, stored, encoding = link[1], link[2], link[3]
        if row_position == position + 1 and encoding is not None and link[4]:
            fresh = sha256(chain_ + encoding).digest()
            if fresh == stored:
                before, chain_, position, row_id = chain_, fresh, row_position, link[0]
                if position in wanted:
                    walk.links[position] = (row_id, fresh)
                continue
        walk.position, walk.chain, walk.row_id = position, chain_, row_id
        walk.before_previous, walk.previous_id = before, row_id if position else None
        walk.divergence = _diagnose(walk, link, details)
        return walk
    walk.position, walk.chain, walk.row_id, walk.before_previous = position, chain_, row_id, before
    return walk


def open_checkpoints(
    region: str, stored: Sequence[StoredCheckpoint], keys: PublicKeySource
) -> tuple[list[Checkpoint], Divergence | None]:
    """The region's checkpoints whose signatures verify; the first one that does not.

    A checkpoint signed by a key no longer accepted (rotated out) proves nothing
    and is passed over while a later one verifies: every page that changes the
    region signs a fresh one. The newest must verify.
    """
    opened: list[Checkpoint] = []
    for index, item in enumerate(stored):
        try:
            checkpoint = Checkpoint.decode(
                verify_statement(item.jws, typ=CHECKPOINT_TYP, keys=keys)
            )
        except TokenRejected as exc:
            if exc.reason == "unknown_key" and index < len(stored) - 1:
                continue
            kind = UNVERIFIABLE_CHECKPOINT if exc.reason == "unknown_key" else FORGED_CHECKPOINT
            return opened, _bad_checkpoint(kind, item, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return opened, _bad_checkpoint(FORGED_CHECKPOINT, item, f"not a checkpoint: {exc}")
        if checkpoint.region != region:
            return opened, _bad_checkpoint(
                FORGED_CHECKPOINT, item, f"signed for {checkpoint.region}"
            )
        opened.append(checkpoint)
    return opened, None


def _bad_checkpoint(kind: str, item: StoredCheckpoint, why: str) -> Divergence:
    return Divergence(kind, "audit_log", row_id=item.audit_id, detail=f"checkpoint: {why}")


def against_checkpoints(walk: _Walk, tips: Sequence[Tip]) -> Divergence | None:
    """The walked chain against each checkpoint's tip of it, then past the last one."""
    kind = walk.kind
    for tip in tips:
        if tip.position == 0:
            continue
        held = walk.links.get(tip.position)
        if held is None:
            return Divergence(
                TRUNCATED,
                kind.table,
                position=walk.tip.position,
                row_id=walk.tip.row_id,
                detail=(
                    f"a signed checkpoint counts {tip.position} rows; "
                    f"the chain holds {walk.tip.position}"
                ),
            )
        if held != (tip.row_id, tip.chain):
            return Divergence(
                REWRITTEN,
                kind.table,
                position=tip.position,
                row_id=held[0],
                fields=("chain",),
                detail="the chain links but disagrees with a signed checkpoint's head at this row",
            )
    signed = tips[-1].position if tips else 0
    if walk.tip.position > signed:
        return Divergence(
            INSERTED,
            kind.table,
            position=signed + 1,
            detail=(
                f"{walk.tip.position - signed} rows after the last signed checkpoint "
                f"({signed} rows)"
            ),
        )
    return None


def verify_region(
    region: str,
    *,
    synced: Iterable[Link],
    quarantined: Iterable[Link],
    stored_checkpoints: Sequence[StoredCheckpoint],
    cursor: str,
    keys: PublicKeySource,
    details: Details,
) -> RegionReport:
    """The region's mirror checked in full; `divergence` is the first fault found."""
    report = RegionReport(region)
    checkpoints, forged = open_checkpoints(region, stored_checkpoints, keys)
    report.checkpoints = len(checkpoints)
    walks = []
    for kind, rows in ((SYNCED, synced), (QUARANTINE, quarantined)):
        tips = [c.synced if kind is SYNCED else c.quarantine for c in checkpoints]
        walk = walk_chain(kind, rows, {tip.position for tip in tips}, details)
        walks.append(walk)
        report.divergence = report.divergence or walk.divergence or forged
        if report.divergence is None:
            report.divergence = against_checkpoints(walk, tips)
    report.synced_rows, report.quarantined_rows = walks[0].tip.position, walks[1].tip.position
    report.synced_head = walks[0].tip.chain
    last_cursor = checkpoints[-1].cursor if checkpoints else ""
    if report.divergence is None and cursor != last_cursor:
        report.divergence = Divergence(
            CURSOR_MOVED,
            "sync_regions",
            detail=f"the cursor is {cursor!r}; the last signed checkpoint left {last_cursor!r}",
        )
    return report
