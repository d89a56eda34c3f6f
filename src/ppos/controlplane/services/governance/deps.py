"""What governance is given by the composition root, and nothing more."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ppos.controlplane.core.pagination import PageTokens
from ppos.controlplane.security.peers import PeerDirectory
from ppos.controlplane.security.tokens import TokenMinter
from ppos.controlplane.services.governance.settings import GovernanceSettings
from ppos.controlplane.storage.database import Database


@dataclass(frozen=True)
class GovernanceDeps:
    """Exactly what governance uses: no other section of the settings, no key ring,
    no verifier, no secrets."""

    settings: GovernanceSettings
    db: Database
    # Issues and reads the page tokens of governance's List RPCs.
    page_tokens: PageTokens
    # Channels to the node registry and registry sync services.
    peers: PeerDirectory
    # Deadline of each call to a peer service, in seconds.
    peer_call_timeout: float
    # Gateways are not peer services: their channels mint a PREFLIGHT_JWT per call.
    minter: TokenMinter
    # Set when the server stops: open streams end with UNAVAILABLE.
    shutdown: asyncio.Event
