"""What the composition root hands to each service, and what each service offers back."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

import grpc

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.core.pagination import PageTokens
from ppos.controlplane.runtime.config import (
    AuthSettings,
    DatabaseRoleSettings,
    PeerSettings,
    ServerSettings,
    TlsSettings,
)
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.page_keys import RingPageKeys
from ppos.controlplane.security.peers import PeerDirectory
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier
from ppos.controlplane.services.governance.settings import GovernanceSettings
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.services.registry_sync.settings import RegistrySyncSettings
from ppos.controlplane.storage.database import Database


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every section of the configuration."""

    server: ServerSettings
    auth: AuthSettings
    peers: PeerSettings
    node_registry: NodeRegistrySettings
    registry_sync: RegistrySyncSettings
    governance: GovernanceSettings
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    database_roles: DatabaseRoleSettings = dataclasses.field(default_factory=DatabaseRoleSettings)


ALL_SECTIONS: list[type] = [
    ServerSettings,
    AuthSettings,
    PeerSettings,
    NodeRegistrySettings,
    RegistrySyncSettings,
    GovernanceSettings,
    TlsSettings,
    DatabaseRoleSettings,
]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Shared dependencies, built once by the composition root."""

    settings: Settings
    db: Database
    keyring: KeyRing
    minter: TokenMinter
    verifier: TokenVerifier
    peers: PeerDirectory
    secrets: SecretRegistry
    shutdown: asyncio.Event
    # Issues and reads every List RPC's page tokens (keys derived from `keyring`).
    page_tokens: PageTokens


def page_tokens_of(keyring: KeyRing) -> PageTokens:
    """The page-token codec of a deployment: the same on every replica sharing its keys."""
    return PageTokens(RingPageKeys(keyring))


class ServiceModule(Protocol):
    """One hosted service: its gRPC servicers and its background work."""

    name: str
    # Fully qualified proto service names it serves (health, reflection, access rules).
    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
