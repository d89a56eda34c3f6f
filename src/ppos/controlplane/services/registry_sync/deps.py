"""What registry sync needs from the composition root, and nothing more."""

from __future__ import annotations

import asyncio
import dataclasses

from ppos.controlplane.core.pagination import PageTokens
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.security.tls import ClientTls
from ppos.controlplane.security.tokens import TokenMinter
from ppos.controlplane.services.registry_sync.settings import RegistrySyncSettings
from ppos.controlplane.storage.database import Database


@dataclasses.dataclass(frozen=True)
class RegistrySyncDeps:
    settings: RegistrySyncSettings
    db: Database
    # Leadership among replicas is held through the database at this URL.
    database_url: str
    # Mints the PREFLIGHT_JWTs of the calls out to each region's external registry.
    minter: TokenMinter
    # Public keys that verify the mirror's signed checkpoints (the minter's key ring).
    checkpoint_keys: PublicKeySource
    # Time the sweeps in flight get to finish when the module stops.
    shutdown_grace: float
    # Issues and reads the List RPCs' page tokens.
    page_tokens: PageTokens
    # Set when the process begins to stop: open status streams end.
    shutdown: asyncio.Event
    # TLS identity of the channels to the regional registries (plaintext: None).
    tls: ClientTls | None = None
