"""Signed checkpoints of the regions' chains, in the append-only audit log.

Every committed page that changes a region appends one: the region, the
page's generation, the cursor it left, and for each chain its row count, its
newest row's id and its head, as a compact JWS signed with the control
plane's key. Someone who can write the database but not sign cannot make a
checkpoint that verifies, so rewriting a chain from some row onwards (or
dropping its tail) shows against the checkpoints signed before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.context import internal
from ppos.controlplane.security.claims import TokenRejected
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.security.statements import verify_statement
from ppos.controlplane.services.registry_sync.chain import Tip
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.audit import AuditEntry

CHECKPOINT_TYP = "ppos-sync-checkpoint+jws"
RESOURCE_KIND = "sync_checkpoint"
SERVICE = "registrysync"
SYNCER = internal("registrysync")

# Signs a checkpoint's canonical bytes: a compact JWS.
Signer = Callable[[bytes], str]


@dataclass(frozen=True)
class Checkpoint:
    region: str
    generation: int
    cursor: str
    synced: Tip
    quarantine: Tip

    def encode(self) -> bytes:
        return json.dumps(
            {
                "region": self.region,
                "generation": self.generation,
                "cursor": self.cursor,
                "synced": _tip_json(self.synced),
                "quarantine": _tip_json(self.quarantine),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        claims = json.loads(data)
        return cls(
            region=str(claims["region"]),
            generation=int(claims["generation"]),
            cursor=str(claims["cursor"]),
            synced=_tip_of(claims["synced"]),
            quarantine=_tip_of(claims["quarantine"]),
        )


def _tip_json(tip: Tip) -> dict[str, object]:
    return {"rows": tip.position, "last_id": tip.row_id, "head": tip.chain.hex()}


def _tip_of(value: dict[str, object]) -> Tip:
    return Tip(
        int(str(value["rows"])), int(str(value["last_id"])), bytes.fromhex(str(value["head"]))
    )


def append(session: Session, checkpoint: Checkpoint, sign: Signer) -> None:
    """The checkpoint, signed, in the caller's (the page's) transaction."""
    audit.record(
        session,
        service=SERVICE,
        resource_kind=RESOURCE_KIND,
        resource_id=checkpoint.region,
        before=None,
        after={"jws": sign(checkpoint.encode())},
        method="RegistrySync/CommitPage",
        actor=SYNCER,
    )


@dataclass(frozen=True)
class StoredCheckpoint:
    audit_id: int
    jws: str


# How far back commit_page looks for a checkpoint that verifies (normally the newest does).
NEWEST_LOOKBACK = 8


def newest_signed(session: Session, region: str, keys: PublicKeySource) -> Checkpoint | None:
    """The region's newest checkpoint whose signature verifies, if any.

    A page extends the chains from here, not from the tables' last rows: a row
    slipped in after the last checkpoint (links and all) then collides with
    the page's positions instead of being chained into the next signed one.
    """
    rows = session.execute(
        select(AuditEntry.after_json)
        .where(AuditEntry.resource_kind == RESOURCE_KIND, AuditEntry.resource_id == region)
        .order_by(AuditEntry.audit_id.desc())
        .limit(NEWEST_LOOKBACK)
    )
    for (after_json,) in rows:
        try:
            token = json.loads(after_json)["jws"]
            checkpoint = Checkpoint.decode(verify_statement(token, typ=CHECKPOINT_TYP, keys=keys))
        except (TokenRejected, ValueError, KeyError, TypeError):
            continue
        if checkpoint.region == region:
            return checkpoint
    return None


def stored(session: Session, region: str) -> Iterator[StoredCheckpoint]:
    """A region's checkpoints as stored (unverified), oldest first."""
    rows = session.execute(
        select(AuditEntry.audit_id, AuditEntry.after_json)
        .where(AuditEntry.resource_kind == RESOURCE_KIND, AuditEntry.resource_id == region)
        .order_by(AuditEntry.audit_id)
    )
    for audit_id, after_json in rows:
        try:
            jws = json.loads(after_json).get("jws", "")
        except (ValueError, AttributeError):
            jws = ""
        yield StoredCheckpoint(int(audit_id), str(jws))
