"""Transaction-scoped locks for write paths that must run one at a time.

On PostgreSQL a transaction advisory lock, held until commit or rollback. SQLite
runs one write transaction at a time already (BEGIN IMMEDIATE), so there is
nothing to take.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def transaction_lock(session: Session, key: int) -> None:
    """Hold `key` (a signed 64-bit advisory key) until this transaction ends."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory key for a lock's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
