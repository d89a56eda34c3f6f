"""Named operators for tests: added straight to a running plane's database, as
`ppos-control-plane operators add` does (same store, same digest), and with its
credential: the owner's (a plane's own login may only look operators up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ppos.controlplane.security.operators import (
    ROLES,
    credential_sha256,
    generate_operator_credential,
)
from ppos.controlplane.storage import operators as store
from ppos.controlplane.storage.database import Database
from tests.support.servers import RunningPlane


@dataclass(frozen=True)
class NamedOperator:
    name: str
    role: str
    credential: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)


async def _as_owner(target: RunningPlane | Database, work: Callable[[Session], object]) -> None:
    if isinstance(target, Database):
        await target.write(work)
        return
    owner = Database(target.database_url, pool_size=1)
    try:
        await owner.write(work)
    finally:
        owner.close()


async def add_operator(target: RunningPlane | Database, name: str, role: str) -> NamedOperator:
    credential = generate_operator_credential()
    digest = credential_sha256(credential)
    await _as_owner(target, lambda session: store.add_operator(session, name, ROLES[role], digest))
    return NamedOperator(name, role, credential)


async def rotate_operator(target: RunningPlane, operator: NamedOperator) -> NamedOperator:
    credential = generate_operator_credential()
    digest = credential_sha256(credential)
    await _as_owner(target, lambda s: store.rotate_operator(s, operator.name, digest))
    return NamedOperator(operator.name, operator.role, credential)


async def revoke_operator(target: RunningPlane, operator: NamedOperator) -> None:
    await _as_owner(target, lambda s: store.revoke_operator(s, operator.name))
