"""Channels to peer services, each call carrying a PREFLIGHT_JWT for that peer."""

from __future__ import annotations

import grpc

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.self_minted import SelfMinted
from ppos.controlplane.security.tls import ClientTls
from ppos.controlplane.security.tokens import TokenMinter

# Audience of each service: its fully qualified proto service name.
SERVICE_AUDIENCE = {
    "governance": "ppos.controlplane.governance.v1.GovernanceService",
    "noderegistry": "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "registrysync": "ppos.controlplane.registrysync.v1.RegistrySyncService",
}


def caller_identity(service: str) -> str:
    """`sub` of tokens minted for calls a service makes: `ppos.controlplane.<service>`."""
    return f"ppos.controlplane.{service}"


class PeerDirectory:
    """Lazily opened, cached channels from one of our services to another."""

    def __init__(
        self,
        minter: TokenMinter,
        addresses: dict[str, str],
        *,
        self_minted: SelfMinted | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self._minter = minter
        self._tls = tls
        self._addresses = dict(addresses)
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._self_minted = self_minted
        self._hosted_here: set[str] = set()

    @property
    def self_minted(self) -> SelfMinted | None:
        """Where channels to services hosted here remember their tokens."""
        return self._self_minted

    @property
    def tls(self) -> ClientTls | None:
        """The outbound TLS identity of this process: every channel it opens, to
        peers and to regional registries and gateways, uses it."""
        return self._tls

    def host_here(self, service: str, own_address: str) -> None:
        """`service` runs in this process, reached through its own port: the tokens
        minted for it are remembered so that its edge knows them (SelfMinted)."""
        self._addresses[service] = own_address
        self._hosted_here.add(service)

    def address(self, service: str) -> str:
        address = self._addresses.get(service, "")
        if not address:
            raise ConfigError(
                f"no address for peer service {service}: set PPOS_PEER_{service.upper()} "
                "or host it in this process"
            )
        return address

    def channel(self, target: str, *, caller: str) -> grpc.aio.Channel:
        key = (target, caller)
        channel = self._channels.get(key)
        if channel is None:
            channel = open_channel(
                self.address(target),
                self._minter,
                audience=SERVICE_AUDIENCE[target],
                subject=caller_identity(caller),
                loopback=self._self_minted if target in self._hosted_here else None,
                tls=self._tls,
            )
            self._channels[key] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def registry_audience(region: str) -> str:
    """Audience of the regional preflight registry of `region`."""
    return f"ppos.preflight.v1.PreflightRegistryService/{region}"


def gateway_audience(region: str) -> str:
    """Audience of the regional preflight gateway of `region`."""
    return f"ppos.preflight.v1.PreflightGatewayService/{region}"
