"""GovernanceService module (its RPCs land with the governance work)."""

from __future__ import annotations

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc
from ppos.controlplane.runtime.modules import Runtime


class GovernanceModule:
    name = "governance"
    service_names: tuple[str, ...] = ("ppos.controlplane.governance.v1.GovernanceService",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_GovernanceServiceServicer_to_server(
            pb_grpc.GovernanceServiceServicer(),  # type: ignore[abstract]  # lands with issue 5
            server,
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
