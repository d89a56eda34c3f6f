"""GovernanceService: the servicer (delegating to its handler objects) and the module.

The module runs this replica's background work, each part optional
(PPOS_GOVERNANCE_BACKGROUND): the outbox dispatcher, the reconciler (one
leader among replicas) and the admin job runner. All of their state is in the
database; stopping a replica loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import cast

import grpc
import structlog

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc
from ppos.controlplane.services.governance.activity import ActivityHandlers
from ppos.controlplane.services.governance.admin_jobs.handlers import AdminJobHandlers
from ppos.controlplane.services.governance.admin_jobs.kinds import KINDS
from ppos.controlplane.services.governance.admin_jobs.runner import AdminJobRunner
from ppos.controlplane.services.governance.audit_api import AuditHandlers
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.outbox.dispatcher import Dispatcher
from ppos.controlplane.services.governance.outbox.receivers import Receivers
from ppos.controlplane.services.governance.peers import Nodes, PeerStubs, SyncedJobs
from ppos.controlplane.services.governance.policy.policies import PolicyHandlers
from ppos.controlplane.services.governance.policy.reconciler import Reconciler
from ppos.controlplane.services.governance.resources.partners import PartnerHandlers
from ppos.controlplane.services.governance.resources.queues import QueueHandlers
from ppos.controlplane.services.governance.resources.routes import RouteHandlers
from ppos.controlplane.services.governance.resources.tenants import TenantHandlers
from ppos.controlplane.storage.leadership import leadership_for

_log = structlog.get_logger("ppos.governance")

RPC_NAMES = frozenset(pb.DESCRIPTOR.services_by_name["GovernanceService"].methods_by_name)


def handler_objects(
    deps: GovernanceDeps, on_commands: Callable[[], None], on_job: Callable[[], None]
) -> list[HandlerBase]:
    """One handler object per area of the service."""
    return [
        TenantHandlers(deps, on_commands),
        QueueHandlers(deps, on_commands),
        PartnerHandlers(deps, on_commands),
        RouteHandlers(deps, on_commands),
        PolicyHandlers(deps),
        ActivityHandlers(deps, on_commands),
        AdminJobHandlers(deps, on_job),
        AuditHandlers(deps),
    ]


class GovernanceServicer:
    """Every RPC of GovernanceService, each delegated to the handler object that
    lists it in its `rpcs`; an RPC listed twice or by no one is refused at start."""

    def __init__(self, handlers: Iterable[HandlerBase]) -> None:
        served: dict[str, HandlerBase] = {}
        for handler in handlers:
            for name in handler.rpcs:
                if name not in RPC_NAMES or name in served:
                    raise ValueError(f"{type(handler).__name__} cannot serve {name}")
                served[name] = handler
        missing = RPC_NAMES - served.keys()
        if missing:
            raise ValueError(f"no handler serves {', '.join(sorted(missing))}")
        for name, handler in served.items():
            # An instance attribute: grpc looks each RPC up on the servicer by name.
            setattr(self, name, getattr(handler, name))


class GovernanceModule:
    name = "governance"
    service_names: tuple[str, ...] = ("ppos.controlplane.governance.v1.GovernanceService",)

    def __init__(self, deps: GovernanceDeps) -> None:
        self._deps = deps
        self.replica = new_id("gov")
        self.receivers = Receivers(deps)
        self.dispatcher = Dispatcher(deps, self.receivers, owner=self.replica)
        self.admin_jobs = AdminJobRunner(deps, KINDS, owner=self.replica)
        peers = PeerStubs(deps)
        self.reconciler = Reconciler(
            deps,
            synced=SyncedJobs(peers),
            nodes=Nodes(peers),
            leadership=leadership_for(deps.db.url, "governance-reconciler"),
            on_commands=self.dispatcher.wake,
        )
        self.servicer = GovernanceServicer(
            handler_objects(deps, self.dispatcher.wake, self.admin_jobs.wake)
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> None:
        # The RPCs are attributes taken from the handler objects (checked complete
        # when the servicer is built), which the generated servicer type cannot see.
        servicer = cast(pb_grpc.GovernanceServiceServicer, self.servicer)
        pb_grpc.add_GovernanceServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        background = self._deps.settings.governance_background
        workers = {
            "dispatcher": self.dispatcher.run,
            "reconciler": self.reconciler.run,
            "admin-jobs": self.admin_jobs.run,
        }
        for name, run in workers.items():
            if name in background:
                self._tasks.append(asyncio.create_task(run(self._stop), name=f"governance-{name}"))
        _log.info("governance.started", replica=self.replica, background=background)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(task, timeout=5)
                except TimeoutError:
                    task.cancel()
                    await task
        self._tasks.clear()
        await self.receivers.close()
