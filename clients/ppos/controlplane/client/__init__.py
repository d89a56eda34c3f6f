"""Typed Python client of the PrintPrice OS control plane.

    from ppos.controlplane.client import ControlPlane

    with ControlPlane.from_environment() as cp:   # PPOS_ADDRESS, PPOS_CONTROL_TOKEN_FILE
        for node in cp.nodes.list_nodes().nodes:
            print(node.node_id)

One object per service (`nodes`, `governance`, `sync`, `jwks`, `identity`, `health`) over
one channel. Every call carries the operator's bearer token, a request id and
a deadline; UNAVAILABLE (and ABORTED, for calls carrying a request id) is
retried with backoff; failures raise the classes
of `ppos.controlplane.client.errors` with the server's rich details.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ppos.controlplane.client.config import ClientConfig, RetryPolicy, Token, load_config
from ppos.controlplane.client.connection import Connection, Stream, new_request_id
from ppos.controlplane.client.errors import (
    AbortedError,
    AlreadyExistsError,
    ClientError,
    ConfigurationError,
    ControlPlaneError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StaleResourceVersionError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from ppos.controlplane.client.governance import GovernanceClient
from ppos.controlplane.client.node_registry import NodeAgentClient, NodeRegistryClient
from ppos.controlplane.client.public import HealthClient, IdentityClient, JwksClient
from ppos.controlplane.client.registry_sync import RegistrySyncClient


class ControlPlane:
    """Every service of one control plane, over one connection."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.connection = Connection(config)
        self._connections = {config.address: self.connection}
        self.nodes = NodeRegistryClient(self._connection_for("noderegistry"))
        self.governance = GovernanceClient(self._connection_for("governance"))
        self.sync = RegistrySyncClient(self._connection_for("registrysync"))
        self.jwks = JwksClient(self.connection)
        self.identity = IdentityClient(self.connection)
        self.health = HealthClient(self.connection)

    def _connection_for(self, service: str) -> Connection:
        """One connection per distinct address (services may run apart)."""
        address = self.config.address_of(service)
        if address not in self._connections:
            self._connections[address] = Connection(self.config, address=address)
        return self._connections[address]

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        address: str | None = None,
        token_file: Path | None = None,
        timeout: float | None = None,
    ) -> ControlPlane:
        return cls(load_config(environ, address=address, token_file=token_file, timeout=timeout))

    def node_agent(self, credential: str = "") -> NodeAgentClient:
        """Calls as a worker node, with its own credential on this connection."""
        return NodeAgentClient(self._connection_for("noderegistry"), credential)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "ClientConfig",
    "ClientError",
    "ConfigurationError",
    "Connection",
    "ControlPlane",
    "ControlPlaneError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GovernanceClient",
    "HealthClient",
    "IdentityClient",
    "InternalError",
    "InvalidArgumentError",
    "JwksClient",
    "NodeAgentClient",
    "NodeRegistryClient",
    "NotFoundError",
    "PermissionDeniedError",
    "RegistrySyncClient",
    "ResourceExhaustedError",
    "RetryPolicy",
    "StaleResourceVersionError",
    "Stream",
    "Token",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "load_config",
    "new_request_id",
]
