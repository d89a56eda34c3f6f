"""RegistrySyncService module (its RPCs land with the registry sync work)."""

from __future__ import annotations

import grpc

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.controlplane.runtime.modules import Runtime


class RegistrySyncModule:
    name = "registrysync"
    service_names: tuple[str, ...] = ("ppos.controlplane.registrysync.v1.RegistrySyncService",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RegistrySyncServiceServicer_to_server(
            pb_grpc.RegistrySyncServiceServicer(),  # type: ignore[abstract]  # lands with issue 4
            server,
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
