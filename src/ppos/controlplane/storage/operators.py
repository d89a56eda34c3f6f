"""Named operators as stored: a name, a role, the SHA-256 of their credential.

The credential itself is never stored: `ppos-control-plane operators` prints
it once (or writes it to a 0600 file) and keeps its digest here. A revoked
operator keeps its row (the audit log names it) but no credential matches it.
Every change writes an audit entry in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ppos.controlplane.core.context import OperatorRole, internal
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.base import Base, UTCDateTime

# Who the audit log says made a change with the server's command line.
CLI_ACTOR = internal("ppos-control-plane operators")


class OperatorRow(Base):
    __tablename__ = "operators"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    credential_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    credential_issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class StoredOperator:
    name: str
    role: OperatorRole
    created_at: dt.datetime
    credential_issued_at: dt.datetime
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, row: OperatorRow) -> StoredOperator:
        return cls(
            row.name,
            OperatorRole[row.role.upper()],
            row.created_at,
            row.credential_issued_at,
            row.revoked_at,
        )


class OperatorConflict(Exception):
    """The change cannot be made as asked (a live name taken, an unknown or revoked one)."""


def _snapshot(row: OperatorRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"name": row.name, "role": row.role, "revoked": row.revoked_at is not None}


def _audit(session: Session, method: str, row: OperatorRow, before: dict[str, Any] | None) -> None:
    audit.record(
        session,
        service="operators",
        resource_kind="operator",
        resource_id=row.name,
        before=before,
        after=_snapshot(row),
        method=method,
        actor=CLI_ACTOR,
    )


def add_operator(session: Session, name: str, role: OperatorRole, digest: str) -> StoredOperator:
    """A new operator, or a revoked one given a new role and credential."""
    row = session.get(OperatorRow, name)
    before = _snapshot(row)
    now = utcnow()
    if row is None:
        row = OperatorRow(name=name, created_at=now)
        session.add(row)
    elif row.revoked_at is None:
        raise OperatorConflict(f"operator {name} exists; rotate its credential or revoke it")
    row.role, row.credential_sha256 = role.label, digest
    row.credential_issued_at, row.revoked_at = now, None
    session.flush()
    _audit(session, "operators add", row, before)
    return StoredOperator.of(row)


def _live(session: Session, name: str) -> OperatorRow:
    row = session.get(OperatorRow, name)
    if row is None:
        raise OperatorConflict(f"no operator named {name}")
    if row.revoked_at is not None:
        raise OperatorConflict(f"operator {name} is revoked; `operators add` it again")
    return row


def rotate_operator(session: Session, name: str, digest: str) -> StoredOperator:
    """A new credential for `name`; the previous one stops matching."""
    row = _live(session, name)
    before = _snapshot(row)
    row.credential_sha256, row.credential_issued_at = digest, utcnow()
    _audit(session, "operators rotate", row, before)
    return StoredOperator.of(row)


def revoke_operator(session: Session, name: str) -> StoredOperator:
    row = _live(session, name)
    before = _snapshot(row)
    row.revoked_at = utcnow()
    _audit(session, "operators revoke", row, before)
    return StoredOperator.of(row)


def list_operators(session: Session) -> list[StoredOperator]:
    rows = session.scalars(select(OperatorRow).order_by(OperatorRow.name))
    return [StoredOperator.of(row) for row in rows]


def operator_by_credential(session: Session, digest: str) -> tuple[str, OperatorRole] | None:
    """The live operator whose credential has this digest: (name, role), or None."""
    row = session.execute(
        select(OperatorRow.name, OperatorRow.role).where(
            OperatorRow.credential_sha256 == digest, OperatorRow.revoked_at.is_(None)
        )
    ).first()
    return None if row is None else (row.name, OperatorRole[row.role.upper()])
