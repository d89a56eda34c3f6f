"""GovernanceService: the servicer (its handler groups) and the module that hosts it.

The module runs this replica's background work, each part optional
(PPOS_GOVERNANCE_BACKGROUND): the outbox dispatcher, the reconciler (one
leader among replicas) and the admin job runner. All of their state is in the
database; stopping a replica loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
import structlog

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc
from ppos.controlplane.runtime.modules import Runtime
from ppos.controlplane.services.governance.activity import ActivityHandlers
from ppos.controlplane.services.governance.admin_jobs.handlers import AdminJobHandlers
from ppos.controlplane.services.governance.admin_jobs.kinds import KINDS
from ppos.controlplane.services.governance.admin_jobs.runner import AdminJobRunner
from ppos.controlplane.services.governance.audit_api import AuditHandlers
from ppos.controlplane.services.governance.leadership import Leadership
from ppos.controlplane.services.governance.outbox.dispatcher import Dispatcher
from ppos.controlplane.services.governance.outbox.receivers import Receivers
from ppos.controlplane.services.governance.peers import Nodes, SyncedJobs
from ppos.controlplane.services.governance.policy.policies import PolicyHandlers
from ppos.controlplane.services.governance.policy.reconciler import Reconciler
from ppos.controlplane.services.governance.resources.routes import RouteHandlers
from ppos.controlplane.services.governance.resources.tenants import TenantHandlers

_log = structlog.get_logger("ppos.governance")


class GovernanceServicer(
    TenantHandlers,
    RouteHandlers,
    PolicyHandlers,
    ActivityHandlers,
    AdminJobHandlers,
    AuditHandlers,
    pb_grpc.GovernanceServiceServicer,
):
    """Every RPC of GovernanceService, from its handler groups."""

    def __init__(
        self,
        runtime: Runtime,
        on_commands: Callable[[], None],
        on_job: Callable[[], None],
    ) -> None:
        AdminJobHandlers.__init__(self, runtime, on_commands, on_job)


class GovernanceModule:
    name = "governance"
    service_names: tuple[str, ...] = ("ppos.controlplane.governance.v1.GovernanceService",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.replica = new_id("gov")
        self.receivers = Receivers(runtime)
        self.dispatcher = Dispatcher(runtime, self.receivers, owner=self.replica)
        self.admin_jobs = AdminJobRunner(runtime, KINDS, owner=self.replica)
        lease = max(3 * runtime.settings.governance.reconciler_interval, 10.0)
        self.reconciler = Reconciler(
            runtime,
            synced=SyncedJobs(runtime),
            nodes=Nodes(runtime),
            leadership=Leadership(runtime.db, "governance-reconciler", self.replica, lease),
            on_commands=self.dispatcher.wake,
        )
        self.servicer = GovernanceServicer(runtime, self.dispatcher.wake, self.admin_jobs.wake)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_GovernanceServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        background = self._runtime.settings.governance.governance_background
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
