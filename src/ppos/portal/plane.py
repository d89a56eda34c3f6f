"""The portal's way to the control plane: one gRPC channel, the client library's calls.

Every signed-in operator gets their own set of service clients over the one shared
channel, each carrying that operator's credential (in a `Token`, whose repr never
shows it). The client library is synchronous; the pages run its calls on worker
threads (`call`) so the event loop keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from starlette.concurrency import run_in_threadpool

from ppos.controlplane.client import (
    ClientConfig,
    Connection,
    GovernanceClient,
    IdentityClient,
    NodeRegistryClient,
    PermissionDeniedError,
    RegistrySyncClient,
    Token,
)
from ppos.controlplane.client.connection import CHANNEL_OPTIONS

T = TypeVar("T")
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class OperatorClients:
    """The services, as one operator (never closed: the channel is the link's)."""

    nodes: NodeRegistryClient
    governance: GovernanceClient
    sync: RegistrySyncClient
    identity: IdentityClient


class PlaneLink:
    """One channel to the plane at `address` (TLS when `ca_file` is given; mutual
    TLS with `cert_file` and `key_file` too)."""

    def __init__(
        self,
        address: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.address = address
        self.ca_file = ca_file
        options = (
            *(option for option in CHANNEL_OPTIONS if option[0] != "grpc.primary_user_agent"),
            ("grpc.primary_user_agent", "ppos-portal"),
        )
        if ca_file is not None:
            credentials = grpc.ssl_channel_credentials(
                ca_file.read_bytes(),
                key_file.read_bytes() if key_file else None,
                cert_file.read_bytes() if cert_file else None,
            )
            self.channel = grpc.secure_channel(address, credentials, options)
        else:
            self.channel = grpc.insecure_channel(address, options)

    def clients_for(self, credential: str, operator: str = "") -> OperatorClients:
        config = ClientConfig(
            address=self.address,
            token=Token(credential, "portal sign-in"),
            timeout=CALL_TIMEOUT,
            operator=operator,
            ca_file=self.ca_file,
        )
        connection = Connection(config, channel=self.channel)
        return OperatorClients(
            nodes=NodeRegistryClient(connection),
            governance=GovernanceClient(connection),
            sync=RegistrySyncClient(connection),
            identity=IdentityClient(connection),
        )

    def close(self) -> None:
        self.channel.close()


def role_of(clients: OperatorClients) -> str:
    """The role the plane grants these clients' credential: viewer, operator or admin
    (IdentityService.WhoAmI, which every process serves)."""
    role = clients.identity.role()
    if role not in ("viewer", "operator", "admin"):
        raise PermissionDeniedError("not an operator's credential")
    return role


async def call(function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    """Run one blocking client call on a worker thread."""
    return await run_in_threadpool(function, *args, **kwargs)
