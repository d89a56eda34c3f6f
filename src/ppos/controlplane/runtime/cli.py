"""`ppos-control-plane`: serve, migrate, manage keys and tokens, show configuration."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from ppos.controlplane.core.logging import SecretRegistry, configure_logging
from ppos.controlplane.core.settings import (
    ConfigError,
    add_arguments,
    environ,
    load_section,
    markdown_table,
    secret_variables,
)
from ppos.controlplane.runtime.config import (
    AuthSettings,
    DatabaseRoleSettings,
    PeerSettings,
    ServerSettings,
    StartupError,
    TlsSettings,
)
from ppos.controlplane.runtime.modules import ALL_SECTIONS, Settings
from ppos.controlplane.runtime.operators import add_operator_arguments, run_operators
from ppos.controlplane.services.governance.settings import GovernanceSettings
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.services.registry_sync.settings import RegistrySyncSettings
from ppos.controlplane.storage.roles import RoleError

EXIT_CONFIG = 2  # configuration errors and start-up failures alike: fix and retry


def _unreachable_database(settings: Settings, exc: sa_exc.DBAPIError) -> str:
    """One line naming the database (never its password) and the driver's first line."""
    url = make_url(settings.server.resolved_database_url).render_as_string(hide_password=True)
    reason = (str(exc.orig).strip().splitlines() or ["no reason given"])[0][:300]
    return f"cannot reach the database {url}: {reason}"


def load_settings(args: argparse.Namespace | None, env: Mapping[str, str]) -> Settings:
    return Settings(
        server=load_section(ServerSettings, args, env),
        auth=load_section(AuthSettings, args, env),
        peers=load_section(PeerSettings, args, env),
        node_registry=load_section(NodeRegistrySettings, args, env),
        registry_sync=load_section(RegistrySyncSettings, args, env),
        governance=load_section(GovernanceSettings, args, env),
        tls=load_section(TlsSettings, args, env),
        database_roles=load_section(DatabaseRoleSettings, args, env),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppos-control-plane",
        allow_abbrev=False,
        description="PrintPrice OS control plane: governance, node registry and registry sync.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", allow_abbrev=False, help="run the gRPC services (all on one port by default)"
    )
    for section in ALL_SECTIONS:
        add_arguments(serve, section)
    migrate = commands.add_parser(
        "migrate", allow_abbrev=False, help="apply database migrations and exit"
    )
    add_arguments(migrate, ServerSettings)
    add_arguments(migrate, DatabaseRoleSettings)
    keys = commands.add_parser(
        "keys", allow_abbrev=False, help="signing keys: rotate, or print the public set"
    )
    keys.add_argument("action", choices=["rotate", "jwks"])
    add_arguments(keys, ServerSettings)
    add_arguments(keys, AuthSettings)
    token = commands.add_parser(
        "token", allow_abbrev=False, help="generate a control token into a 0600 file"
    )
    token.add_argument("action", choices=["generate"])
    token.add_argument("--out", type=Path, required=True, help="file to create (must not exist)")
    add_arguments(add_operator_arguments(commands), ServerSettings)
    config = commands.add_parser(
        "config", allow_abbrev=False, help="print the settings table (markdown)"
    )
    config.add_argument("action", choices=["table"])
    return parser


async def _serve(settings: Settings, secrets: SecretRegistry) -> int:
    from ppos.controlplane.runtime.server import ControlPlaneServer

    server = ControlPlaneServer(settings, secrets=secrets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()
    return 0


def event_loop_runner(name: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """`asyncio.run` on the configured event loop (see ServerSettings.event_loop)."""
    if name == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def _migrate(settings: Settings) -> int:
    from ppos.controlplane.storage import migrate
    from ppos.controlplane.storage.database import Database

    plan = settings.database_roles.role_plan()
    db = Database(settings.server.resolved_database_url)
    try:
        migrate.run(db.write_engine, plan)
        structlog.get_logger("ppos.migrate").info(
            "migrate.done", pending=sorted(migrate.pending(db.read_engine))
        )
    finally:
        db.close()
    return 0


def _keys(settings: Settings, action: str) -> int:
    from ppos.controlplane.runtime.composition import load_keyring
    from ppos.controlplane.security.keys import KeyRing

    if action == "rotate":
        if settings.auth.signing_key_file is not None:
            raise ConfigError("keys rotate works on a key directory, not PPOS_SIGNING_KEY_FILE")
        key_dir = settings.auth.key_dir or settings.server.data_dir / "keys"
        kid = KeyRing.rotate(key_dir)
        ring = KeyRing.from_directory(key_dir, overlap=settings.auth.key_overlap)
        ring.write_jwks(settings.auth.jwks_file or settings.server.data_dir / "jwks.json")
        print(kid)
        return 0
    sys.stdout.write(load_keyring(settings).jwks_json())
    return 0


def _token(out: Path) -> int:
    from ppos.controlplane.security.control_token import generate_control_token

    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{out} exists; remove it first to generate a new token") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_control_token() + "\n")
    print(f"control token written to {out} (mode 0600)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = environ()
    try:
        if args.command == "token":
            return _token(args.out)
        if args.command == "config":
            sys.stdout.write(markdown_table(ALL_SECTIONS))
            return 0
        settings = load_settings(args, env)
        for name in secret_variables(ALL_SECTIONS):
            # The settings hold it now; the process environment (and children) need not.
            os.environ.pop(name, None)
        secrets = configure_logging(level=settings.server.log_level, fmt=settings.server.log_format)
        try:
            if args.command == "serve":
                return event_loop_runner(settings.server.event_loop)(_serve(settings, secrets))
            if args.command == "migrate":
                return _migrate(settings)
            if args.command == "operators":
                return run_operators(settings, args)
        except RoleError as exc:
            raise ConfigError(f"database roles: {exc}") from None
        except sa_exc.DBAPIError as exc:
            raise StartupError(_unreachable_database(settings, exc)) from None
        return _keys(settings, args.action)
    except StartupError as exc:
        print(f"ppos-control-plane: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"ppos-control-plane: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"ppos-control-plane: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
