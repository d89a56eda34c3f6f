"""What each service is handed: the composition root's parts, narrowed per service.

Every factory builds one service module from the runtime the composition root
made (runtime/server.py), giving it only what it uses (its settings, the
database, its peers, the minter where it calls out).
"""

from __future__ import annotations

from collections.abc import Callable

from ppos.controlplane.runtime.modules import Runtime, ServiceModule, Settings
from ppos.controlplane.security.keys import JwksKeySource, KeyRing
from ppos.controlplane.services.governance.deps import GovernanceDeps

ModuleFactory = Callable[[Runtime], ServiceModule]


def governance_deps(runtime: Runtime) -> GovernanceDeps:
    """What governance is handed: its own settings and exactly the shared parts it uses."""
    return GovernanceDeps(
        settings=runtime.settings.governance,
        db=runtime.db,
        page_tokens=runtime.page_tokens,
        peers=runtime.peers,
        peer_call_timeout=float(runtime.settings.peers.peer_call_timeout),
        minter=runtime.minter,
        shutdown=runtime.shutdown,
    )


def governance_module(runtime: Runtime) -> ServiceModule:
    from ppos.controlplane.services.governance.service import GovernanceModule

    return GovernanceModule(governance_deps(runtime))


def default_modules() -> dict[str, ModuleFactory]:
    """The service modules by name (imported here, not at import time of this module)."""
    return {
        "governance": governance_module,
        "noderegistry": node_registry_module,
        "registrysync": registry_sync_module,
    }


def node_registry_module(runtime: Runtime) -> ServiceModule:
    """The node registry, handed only what it uses."""
    from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
    from ppos.controlplane.services.node_registry.service import NodeRegistryModule

    return NodeRegistryModule(
        NodeRegistryDeps(
            settings=runtime.settings.node_registry,
            db=runtime.db,
            database_url=runtime.settings.server.resolved_database_url,
            minter=runtime.minter,
            node_credential_ttl=runtime.settings.auth.node_credential_ttl,
            page_tokens=runtime.page_tokens,
            shutdown=runtime.shutdown,
        )
    )


def registry_sync_module(runtime: Runtime) -> ServiceModule:
    """Registry sync, handed only what it uses."""
    from ppos.controlplane.services.registry_sync.deps import RegistrySyncDeps
    from ppos.controlplane.services.registry_sync.service import RegistrySyncModule

    return RegistrySyncModule(
        RegistrySyncDeps(
            settings=runtime.settings.registry_sync,
            db=runtime.db,
            database_url=runtime.settings.server.resolved_database_url,
            minter=runtime.minter,
            checkpoint_keys=runtime.keyring,
            shutdown_grace=runtime.settings.server.shutdown_grace,
            page_tokens=runtime.page_tokens,
            shutdown=runtime.shutdown,
            tls=runtime.peers.tls,
        )
    )


def load_keyring(settings: Settings) -> KeyRing:
    auth = settings.auth
    if auth.signing_key_file is not None:
        extra = JwksKeySource.from_file(auth.extra_jwks_file) if auth.extra_jwks_file else None
        return KeyRing.from_file(auth.signing_key_file, extra=extra, overlap=auth.key_overlap)
    key_dir = auth.key_dir or settings.server.data_dir / "keys"
    return KeyRing.from_directory(key_dir, overlap=auth.key_overlap)
