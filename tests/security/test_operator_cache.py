"""The edge's cache of operator credentials over the real store: answers kept
for their TTL (found or not), at most max_entries of them, oldest dropped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ppos.controlplane.runtime.operators import StoredOperatorLookup
from ppos.controlplane.security.operators import (
    OperatorCredentialCache,
    OperatorIdentity,
    credential_sha256,
)
from ppos.controlplane.security.principal import OperatorRole
from ppos.controlplane.storage import operators as store
from ppos.controlplane.storage.database import Database
from tests.support.operators import add_operator


class CountingLookup(StoredOperatorLookup):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.asked: list[str] = []

    async def operator_by_credential(self, credential_sha256: str) -> OperatorIdentity | None:
        self.asked.append(credential_sha256)
        return await super().operator_by_credential(credential_sha256)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, pool_size=2)
    try:
        yield database
    finally:
        database.close()


async def test_answers_are_kept_for_their_ttl_and_bounded(db: Database) -> None:
    now = [100.0]
    lookup = CountingLookup(db)
    cache = OperatorCredentialCache(lookup, ttl=5.0, max_entries=2, clock=lambda: now[0])
    ann = credential_sha256((await add_operator(db, "ann", "viewer")).credential)
    ben = credential_sha256((await add_operator(db, "ben", "admin")).credential)
    unknown = credential_sha256("ppos_op_nobody")

    assert cache.cached(ann) == (False, None)
    assert await cache.resolve(ann) == OperatorIdentity("ann", OperatorRole.VIEWER)
    assert cache.cached(ann) == (True, OperatorIdentity("ann", OperatorRole.VIEWER))
    assert await cache.resolve(unknown) is None  # a miss is kept too
    assert cache.cached(unknown) == (True, None)
    assert lookup.asked == [ann, unknown]

    await db.write(lambda session: store.revoke_operator(session, "ann"))
    now[0] += 4.9
    assert cache.cached(ann)[1] is not None  # within the TTL: the answer stands
    now[0] += 0.2
    assert cache.cached(ann) == (False, None)
    assert await cache.resolve(ann) is None  # the revoke, from the database

    # At most two answers: a third drops the oldest, still within its TTL.
    bounded = OperatorCredentialCache(lookup, ttl=5.0, max_entries=2, clock=lambda: now[0])
    for digest in (unknown, ann, ben):
        await bounded.resolve(digest)
    assert [bounded.cached(d)[0] for d in (unknown, ann, ben)] == [False, True, True]
    assert bounded.cached(ben) == (True, OperatorIdentity("ben", OperatorRole.ADMIN))
