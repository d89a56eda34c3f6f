"""A real control plane on a loopback port, configured the way operators do it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.runtime.cli import load_settings
from ppos.controlplane.runtime.server import ControlPlaneServer
from tests.support.canary import scan_files
from tests.support.databases import runtime_url
from tests.support.relay import RULES as RELAY_RULES
from tests.support.relay import RelayModule
from tests.support.tls import TlsFiles


@dataclass
class RunningPlane:
    server: ControlPlaneServer
    token: str
    database_url: str
    data_dir: Path
    channel: grpc.aio.Channel
    auth_failures: list[tuple[str, str]] = field(default_factory=list)
    # The certificates of a plane that requires mutual TLS (None: plaintext).
    tls: TlsFiles | None = None

    def tls_env(self) -> dict[str, str]:
        """A client's TLS settings for this plane (pposctl, Node.js): empty if plaintext."""
        if self.tls is None:
            return {}
        return {
            "PPOS_CA_FILE": str(self.tls.ca_file),
            "PPOS_CERT_FILE": str(self.tls.client_cert),
            "PPOS_KEY_FILE": str(self.tls.client_key),
        }

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def operator(self) -> tuple[tuple[str, str], ...]:
        """Call metadata of an operator."""
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def runtime(self) -> Any:
        return self.server.runtime


def plane_env(
    *, token: str, database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {
        "PPOS_LISTEN": "127.0.0.1:0",
        "PPOS_CONTROL_TOKEN": token,
        # As in production: the owner migrated the database, the plane runs as a
        # runtime login with the services' grants only (PostgreSQL).
        "PPOS_DATABASE_URL": runtime_url(database_url),
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_DB_POOL_SIZE": "4",
        "PPOS_SHUTDOWN_GRACE": "1s",
    }
    env.update(extra or {})
    return env


async def start_plane(
    *,
    token: str,
    database_url: str,
    data_dir: Path,
    secrets: SecretRegistry,
    extra_env: Mapping[str, str] | None = None,
    relay_target: str | None = None,
    channel_credentials: grpc.ChannelCredentials | None = None,
) -> RunningPlane:
    """Start a plane; with `relay_target`, also host the test Relay/Echo pair
    (Relay calls Echo at `relay_target`, or at this plane itself when empty)."""
    settings = load_settings(
        None, plane_env(token=token, database_url=database_url, data_dir=data_dir, extra=extra_env)
    )
    failures: list[tuple[str, str]] = []
    extra: dict[str, Any] = {}
    if relay_target is not None:
        extra = {
            "extra_modules": (lambda runtime: RelayModule(runtime, target=relay_target),),
            "extra_access_rules": RELAY_RULES,
        }
    server = ControlPlaneServer(
        settings, secrets=secrets, on_auth_failure=lambda m, r: failures.append((m, r)), **extra
    )
    await server.start()
    if channel_credentials is None:
        channel = grpc.aio.insecure_channel(server.address)
    else:
        channel = grpc.aio.secure_channel(server.address, channel_credentials)
    return RunningPlane(server, token, database_url, data_dir, channel, failures)


async def stop_plane(plane: RunningPlane) -> None:
    await plane.channel.close()
    await plane.server.stop(grace=1)


@contextlib.asynccontextmanager
async def scanned_plane(
    *,
    token: str,
    database_url: str,
    tmp_path: Path,
    secrets: SecretRegistry,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningPlane]:
    """A plane with its data under `tmp_path`; once stopped, no file there may
    hold the control token."""
    running = await start_plane(
        token=token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secrets,
        extra_env=extra_env,
    )
    try:
        yield running
    finally:
        await stop_plane(running)
    assert scan_files(tmp_path, token) == [], "canary token written to a file"
