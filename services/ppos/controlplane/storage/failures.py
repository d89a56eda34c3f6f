"""Database failures that are the database's state, not a bug in a handler.

A connection lost in the middle of a call (the database restarted, failed over,
or ended the session) is transient: the caller should retry, and the pool
replaces the connection. It is answered UNAVAILABLE with a RetryInfo
(`DATABASE_UNAVAILABLE`), not INTERNAL. The call's transaction was rolled back,
unless the connection was lost during the commit itself (then it may have
committed): a retry is as safe as any retry of that call (calls that create
things carry request ids or idempotency keys).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.errors import Unavailable

RETRY_AFTER_SECONDS = 1.0


def as_unavailable(exc: BaseException) -> Unavailable | None:
    """UNAVAILABLE for a lost database connection; None for anything else."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Unavailable(
            "the database connection was lost during the call; retry it",
            retry_after_seconds=RETRY_AFTER_SECONDS,
            reason="DATABASE_UNAVAILABLE",
        )
    return None
