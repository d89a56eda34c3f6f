"""How a portal runs: where it listens, which plane it steers, how long sessions live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PortalSettings:
    """Everything `create_app` needs; the defaults suit one operator on a workstation."""

    plane_address: str = "127.0.0.1:50051"
    #: CA bundle of the plane's TLS certificate; None for a plaintext loopback plane.
    plane_ca_file: Path | None = None
    #: Client certificate and key the portal presents to the plane (mutual TLS).
    plane_cert_file: Path | None = None
    plane_key_file: Path | None = None
    #: A session ends this long after its operator's last request...
    idle_seconds: float = 30 * 60
    #: ...and this long after sign-in, whatever happens.
    absolute_seconds: float = 12 * 3600
    #: Cookies marked Secure (and `__Host-` prefixed): on when served over TLS,
    #: or behind a TLS-terminating proxy.
    secure_cookies: bool = False
    #: A live view (overview, nodes table, ...) is read again at most this often,
    #: and only when a watch stream reports a change.
    live_interval: float = 0.25
    #: Where the npm browser libraries are (None: found next to the package).
    node_modules: Path | None = None
    #: Failed sign-ins allowed per client address per minute.
    sign_in_attempts: int = 5
