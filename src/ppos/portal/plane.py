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
    InvalidArgumentError,
    NodeRegistryClient,
    NotFoundError,
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
        )

    def close(self) -> None:
        self.channel.close()


def role_of(clients: OperatorClients) -> str:
    """The role the plane grants these clients' credential: viewer, operator or admin.

    The plane has no "who am I" call, but its edge checks the role before a request is
    read, and names the caller's role when it is too low. So this asks for an admin's
    change that cannot happen (delete the policy with no id): a viewer or an operator
    is refused with ROLE_REQUIRED and their role; an admin reaches the service, which
    refuses the empty id. Nothing is changed or audited either way."""
    try:
        clients.governance.delete_policy("", expected_resource_version="")
    except PermissionDeniedError as refused:
        role = refused.details.metadata.get("role", "")
        if refused.reason != "ROLE_REQUIRED" or role not in ("viewer", "operator"):
            raise
        return role
    except (InvalidArgumentError, NotFoundError):
        pass
    return "admin"


async def call(function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    """Run one blocking client call on a worker thread."""
    return await run_in_threadpool(function, *args, **kwargs)
