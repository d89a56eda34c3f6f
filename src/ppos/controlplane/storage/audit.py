"""The append-only audit log: every mutation writes one entry in its own transaction.

Who, what (method, resource, before and after), why (the reason the caller
gave, when the change takes one), when, request id. Entries are
built from resource snapshots that never contain credentials; on PostgreSQL a
trigger refuses UPDATE and DELETE of the table.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Index, String, Table, Text, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from ppos.controlplane.core.context import (
    Principal,
    current_method,
    current_principal,
    current_request_id,
)
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.storage.base import Base, BigIntPK, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_log"

    audit_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    service: Mapped[str] = mapped_column(String(64), nullable=False)
    actor_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    actor_name: Mapped[str] = mapped_column(String(256), nullable=False)
    method: Mapped[str] = mapped_column(String(256), nullable=False)
    resource_kind: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(256), nullable=False)
    before_json: Mapped[str] = mapped_column(Text, nullable=False, default="")
    after_json: Mapped[str] = mapped_column(Text, nullable=False, default="")
    request_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")

    __table_args__ = (Index("ix_audit_log_resource", "resource_kind", "resource_id"),)


def _dump(snapshot: dict[str, Any] | None) -> str:
    if snapshot is None:
        return ""
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)


def entry_values(
    *,
    service: str,
    resource_kind: str,
    resource_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    method: str | None = None,
    actor: Principal | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """The columns of one audit entry (see `record`)."""
    who = actor or current_principal.get()
    return {
        "created_at": utcnow(),
        "service": service,
        "actor_kind": who.kind.value,
        "actor_name": who.name,
        "method": method or current_method.get() or "internal",
        "resource_kind": resource_kind,
        "resource_id": resource_id,
        "before_json": _dump(before),
        "after_json": _dump(after),
        "request_id": current_request_id.get(),
        "reason": reason,
    }


def record(
    session: Session,
    *,
    service: str,
    resource_kind: str,
    resource_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    method: str | None = None,
    actor: Principal | None = None,
    reason: str = "",
) -> AuditEntry:
    """Add an audit entry to the caller's transaction (commits or rolls back with it).

    `reason` is the one the caller gave for the change (cordon, drain, delete...).
    """
    entry = AuditEntry(
        **entry_values(
            service=service,
            resource_kind=resource_kind,
            resource_id=resource_id,
            before=before,
            after=after,
            method=method,
            actor=actor,
            reason=reason,
        )
    )
    session.add(entry)
    return entry


def record_all(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    """Insert many entries (`entry_values`) in one statement, in the caller's transaction."""
    if entries:
        session.connection().execute(_INSERT, list(entries))


# Built once: every group of outcomes the outbox records inserts its entries.
_INSERT = insert(cast(Table, AuditEntry.__table__))
