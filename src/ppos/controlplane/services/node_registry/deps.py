"""What the node registry needs from the composition root, and nothing more."""

from __future__ import annotations

import asyncio
import dataclasses

from ppos.controlplane.core.pagination import PageTokens
from ppos.controlplane.security.tokens import TokenMinter
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.storage.database import Database


@dataclasses.dataclass(frozen=True)
class NodeRegistryDeps:
    settings: NodeRegistrySettings
    db: Database
    # The LISTEN connection on PostgreSQL opens its own connection to it.
    database_url: str
    # Issues node credentials at enrollment and renewal, valid this many seconds.
    minter: TokenMinter
    node_credential_ttl: float
    # Issues and reads the List RPCs' page tokens.
    page_tokens: PageTokens
    # Set when the process begins to stop: open streams end.
    shutdown: asyncio.Event
