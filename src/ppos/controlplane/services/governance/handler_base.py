"""What governance's RPC handler objects share: their dependencies and helpers.

Each area (tenants, queues, partners and routes, policies, activity, admin
jobs, audit) is one handler object; the servicer delegates each RPC to the
object that lists it in `rpcs` (service.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from ppos.controlplane.core.pagination import Listing
from ppos.controlplane.services.governance.common import T, write_once
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.paging import Page


def nothing() -> None:
    return None


class HandlerBase:
    """Base of the per-area handler objects.

    `on_commands` is called after a transaction that wrote outbox commands has
    committed, so this replica's dispatcher delivers them without waiting for
    its next poll.
    """

    # The GovernanceService RPCs this object serves, by method name.
    rpcs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, deps: GovernanceDeps, on_commands: Callable[[], None] = nothing) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._db = deps.db
        self._on_commands = on_commands

    @property
    def _gateway_regions(self) -> list[str]:
        return sorted(self._settings.gateways)

    async def _write(self, work: Callable[[Session], T]) -> T:
        return await write_once(self._db, work)

    def _page(self, listing: Listing, size: int, token: str, filters: Mapping[str, Any]) -> Page:
        return Page(self._deps.page_tokens, listing, size, token, filters)
