"""Verification of the mirror: recompute a region's chains and check its signed checkpoints.

Pure: it is handed the rows (in id order), the stored checkpoints and the
region's cursor, and names the first divergence it finds:

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ppos.controlplane.core import hashchain
from ppos.controlplane.security.claims import TokenRejected
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.security.statements import verify_statement
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

# A stored row as read for verification: every chained field, the chain
# columns, and `content_intact` (the payload's or raw record's bytes hash to
# the stored digest).
Row = Mapping[str, object]


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
    # The tip so far, kept as plain fields (a Tip per row costs more than its hash).
    position: int = 0
    row_id: int = 0
    chain: bytes = hashchain.GENESIS
    links: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    divergence: Divergence | None = None
    # The link before the previous row: tells a forged row from the genuine one after it.
    before_previous: bytes = hashchain.GENESIS
    previous_row: Row | None = None

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


def _values(kind: ChainKind, row: Row) -> list[hashchain.Value]:
    return [row[name] for name in kind.fields]  # type: ignore[misc]


def _step(walk: _Walk, row: Row) -> Divergence | None:
    """Check one row against the chain so far; extend the walk when it holds."""
    kind, expected = walk.kind, walk.position + 1
    link, position = row.get("chain"), row.get("chain_position")
    if not isinstance(link, bytes | bytearray | memoryview) or not isinstance(position, int):
        return _describe(kind, row, INSERTED, fields=("chain",), detail="the row carries no chain")
    content = "canonical_payload" if kind is SYNCED else "raw_record"
    if position > expected:
        return _describe(
            kind, row, DELETED, detail=f"positions {expected}..{position - 1} are missing before it"
        )
    if position < expected:
        return _repeated(walk, row, position)
    values = _values(kind, row)
    fresh = hashchain.link(walk.chain, kind.domain, values)
    if fresh != bytes(link):
        checks = row.get("chain_checks")
        held = bytes(checks) if isinstance(checks, bytes | bytearray | memoryview) else b""
        changed = hashchain.changed_fields(kind.fields, values, held)
        if not changed and walk.previous_row is not None:
            # Its own fields are as sealed: the row before it was replaced by one
            # with a link of its own (or this row's chain column was edited).
            return _describe(
                kind,
                walk.previous_row,
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
    if row.get("content_intact") is False:
        return _describe(
            kind, row, CHANGED, fields=(content,), detail="the bytes do not match their digest"
        )
    walk.before_previous, walk.previous_row = walk.chain, row
    walk.position, walk.chain = position, fresh
    walk.row_id = row[kind.id_column]  # type: ignore[assignment]
    if position in walk.wanted:
        walk.links[position] = (walk.row_id, fresh)
    return None


def _repeated(walk: _Walk, row: Row, position: int) -> Divergence:
    """A position seen twice: the one that does not link to its predecessor is the forgery."""
    kind = walk.kind
    previous = walk.previous_row
    if (
        previous is not None
        and position == walk.position
        and hashchain.link(walk.before_previous, kind.domain, _values(kind, row))
        == row.get("chain")
    ):
        return _describe(kind, previous, INSERTED, detail=f"a second row at position {position}")
    return _describe(kind, row, INSERTED, detail=f"a second row at position {position}")


def walk_chain(kind: ChainKind, rows: Iterable[Row], wanted: set[int]) -> _Walk:
    walk = _Walk(kind, wanted)
    for row in rows:
        divergence = _step(walk, row)
        if divergence is not None:
            walk.divergence = divergence
            break
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
    synced: Iterable[Row],
    quarantined: Iterable[Row],
    stored_checkpoints: Sequence[StoredCheckpoint],
    cursor: str,
    keys: PublicKeySource,
) -> RegionReport:
    """The region's mirror checked in full; `divergence` is the first fault found."""
    report = RegionReport(region)
    checkpoints, forged = open_checkpoints(region, stored_checkpoints, keys)
    report.checkpoints = len(checkpoints)
    walks = []
    for kind, rows in ((SYNCED, synced), (QUARANTINE, quarantined)):
        tips = [c.synced if kind is SYNCED else c.quarantine for c in checkpoints]
        walk = walk_chain(kind, rows, {tip.position for tip in tips})
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
