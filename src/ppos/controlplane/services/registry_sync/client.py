"""Calls to one regional registry, each with a deadline and a fresh PREFLIGHT_JWT.

Pages are received as raw bytes (see page_decoding.py). The channel comes from
`security.outbound.open_channel`: every call carries a PREFLIGHT_JWT minted
for this registry's audience and the called method, and nothing else.
"""

from __future__ import annotations

import grpc

from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.peers import caller_identity, registry_audience
from ppos.controlplane.security.tls import ClientTls
from ppos.controlplane.security.tokens import TokenMinter
from ppos.preflight.v1 import registry_service_pb2 as pb

SERVICE = "/ppos.preflight.v1.PreflightRegistryService"
CALLER = "registrysync"


def _raw(data: bytes) -> bytes:
    return data


class RegistryClient:
    def __init__(
        self, region: str, address: str, minter: TokenMinter, *, tls: ClientTls | None = None
    ) -> None:
        self.region = region
        self.address = address
        self._channel = open_channel(
            address,
            minter,
            audience=registry_audience(region),
            subject=caller_identity(CALLER),
            tls=tls,
        )
        self._info = self._channel.unary_unary(
            f"{SERVICE}/GetRegistryInfo",
            request_serializer=pb.GetRegistryInfoRequest.SerializeToString,
            response_deserializer=pb.GetRegistryInfoResponse.FromString,
        )
        self._changes = self._channel.unary_unary(
            f"{SERVICE}/ListJobChanges",
            request_serializer=pb.ListJobChangesRequest.SerializeToString,
            response_deserializer=_raw,
        )

    async def info(self, *, deadline: float) -> pb.GetRegistryInfoResponse:
        reply: pb.GetRegistryInfoResponse = await self._info(
            pb.GetRegistryInfoRequest(), timeout=deadline
        )
        return reply

    async def page(
        self, after_cursor: str, *, page_size: int, max_page_bytes: int, deadline: float
    ) -> bytes:
        """The raw ListJobChangesResponse after `after_cursor`."""
        reply: bytes = await self._changes(
            pb.ListJobChangesRequest(
                after_cursor=after_cursor, page_size=page_size, max_page_bytes=max_page_bytes
            ),
            timeout=deadline,
        )
        return reply

    async def close(self) -> None:
        await self._channel.close()


def describe(error: grpc.aio.AioRpcError) -> str:
    """A one-line account of a failed registry call (never any metadata)."""
    return f"{error.code().name}: {error.details() or 'no details'}"
