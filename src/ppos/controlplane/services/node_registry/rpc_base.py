"""What every part of the NodeRegistryService servicer shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import (
    NotFound,
    PermissionDenied,
    StaleResourceVersion,
    Unauthenticated,
)
from ppos.controlplane.core.timeutil import to_duration
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry.changelog import (
    CHANGED_KEY,
    LoggedEvent,
    logged_events,
)
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.health_sweep import HealthSweeper
from ppos.controlplane.services.node_registry.heartbeats import HeartbeatBatcher
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.signals import CommandSignals

SERVICE = "noderegistry"
Context = grpc.aio.ServicerContext[object, object]
T = TypeVar("T")


class ServicerBase:
    def __init__(
        self,
        deps: NodeRegistryDeps,
        hub: WatchHub,
        signals: CommandSignals,
        sweeper: HealthSweeper,
        heartbeats: HeartbeatBatcher,
    ) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._hub = hub
        self._signals = signals
        self._sweeper = sweeper
        self._heartbeats = heartbeats

    async def _write(self, work: Callable[[Session], T]) -> T:
        """One write transaction; hands the watch hub the node changes it committed."""
        changed = False
        logged: list[LoggedEvent] = []

        def run(session: Session) -> T:
            nonlocal changed, logged
            result = work(session)
            changed = bool(session.info.get(CHANGED_KEY))
            logged = logged_events(session)
            return result

        result = await self._deps.db.write(run)
        if logged:
            self._hub.offer(logged)  # committed: the hub need not read them back
        if changed:
            self._hub.poke()
        return result

    def _heartbeat_settings(self) -> node_pb2.HeartbeatSettings:
        return node_pb2.HeartbeatSettings(
            interval=to_duration(self._settings.heartbeat_interval),
            ttl=to_duration(self._settings.heartbeat_ttl),
        )

    @staticmethod
    def _own_node(session: Session, principal: Principal, *, for_update: bool = True) -> NodeRow:
        """The calling node's row; refuses revoked or unknown credentials."""
        query = select(NodeRow).where(NodeRow.node_id == principal.name)
        if for_update:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None or row.credential_generation != principal.credential_generation:
            raise Unauthenticated(
                "node credential revoked or node unknown", reason="NODE_CREDENTIAL_REVOKED"
            )
        return row

    @staticmethod
    def _only_self(principal: Principal, field: str, node_id: str) -> None:
        """A node can address only itself: its id comes from its credential."""
        if node_id and node_id != principal.name:
            raise PermissionDenied(
                f"{field} {node_id!r} is not the calling node: a node credential can only "
                f"act for its own node ({principal.name})",
                reason="NODE_ID_MISMATCH",
                metadata={"field": field},
            )

    @staticmethod
    def _lock_node(session: Session, node_id: str) -> NodeRow:
        row = session.scalars(
            select(NodeRow).where(NodeRow.node_id == node_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound("node", node_id)
        return row


def expected_version(violations: Violations, field: str, value: str) -> int | None:
    """The caller's `expected_resource_version` (None: no check); ASCII digits only."""
    return violations.resource_version(field, value)


def check_version(row: NodeRow, expected: int | None) -> None:
    if expected is not None and expected != row.resource_version:
        raise StaleResourceVersion("node", row.node_id, str(expected), str(row.resource_version))
