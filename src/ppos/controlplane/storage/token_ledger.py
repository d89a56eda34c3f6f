"""The ledger of PREFLIGHT_JWTs spent on mutating calls, shared by every replica.

A PREFLIGHT_JWT minted for a mutating call may be presented once: the edge
records its `jti` here before the handler runs, and a second presentation (to
this replica or any other on the same database) finds it and is refused. Rows
live until their token expires (plus the verifier's leeway); expired ones are
deleted now and then by the inserts themselves, so the table holds at most the
mutating calls of one token lifetime.
"""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, String, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from ppos.controlplane.storage.base import Base
from ppos.controlplane.storage.database import Database

# Every this many first uses, a recorder also deletes the expired rows.
PURGE_EVERY = 256


class SpentToken(Base):
    __tablename__ = "spent_preflight_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Unix seconds after which the token cannot verify any more.
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class TokenLedger:
    """`first_use` for the edge (security.edge.ReplayLedger), backed by the database."""

    def __init__(self, db: Database, *, leeway_seconds: float = 5.0) -> None:
        self._db = db
        self._leeway = int(leeway_seconds) + 1
        self._recorded = 0

    async def first_use(self, jti: str, expires_at: int) -> bool:
        self._recorded += 1
        purge = self._recorded % PURGE_EVERY == 0
        return await self._db.write(lambda session: self._record(session, jti, expires_at, purge))

    def _record(self, session: Session, jti: str, expires_at: int, purge: bool) -> bool:
        insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        statement = (
            insert(SpentToken)
            .values(jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["jti"])
            .returning(SpentToken.jti)  # a row back only when this call inserted it
        )
        inserted = session.execute(statement).scalar_one_or_none() is not None
        if purge:
            horizon = int(time.time()) - self._leeway
            session.execute(delete(SpentToken).where(SpentToken.expires_at < horizon))
        return inserted
