"""Settings of the process as a whole: server, authentication and peers.

Each service declares its own section beside its code; `ALL_SECTIONS` lists
every section the command line and the README's table know about.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ppos.controlplane.core.settings import ConfigError, Seconds, Secret, setting
from ppos.controlplane.security.tls import ClientTls, ServerTls, is_loopback_host
from ppos.controlplane.storage.roles import RoleError, RolePlan, logins_from_urls


class StartupError(Exception):
    """The process cannot start with a valid configuration: a port taken, a database
    out of reach. Reported in one line with exit code 2, like a configuration error."""


SERVICE_NAMES = ("governance", "noderegistry", "registrysync")
EVENT_LOOPS = ("uvloop", "asyncio")


def _default_data_dir() -> Path:
    return Path("~/.local/state/ppos-control-plane").expanduser()


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Server: where it listens, what it hosts, where it keeps state."""

    listen: str = setting("PPOS_LISTEN", "host:port to serve gRPC on", default="127.0.0.1:50051")
    services: list[str] = setting(
        "PPOS_SERVICES",
        "services to host, comma-separated (governance, noderegistry, registrysync)",
        default_factory=lambda: list(SERVICE_NAMES),
        flag="--service",
    )
    data_dir: Path = setting(
        "PPOS_DATA_DIR",
        "directory for the SQLite file, generated keys and the JWKS file",
        default_factory=_default_data_dir,
    )
    database_url: str = setting(
        "PPOS_DATABASE_URL",
        "SQLAlchemy URL; empty means SQLite in the data directory "
        "(PostgreSQL: postgresql+psycopg://user@host/db)",
        default="",
    )
    db_pool_size: int = setting(
        "PPOS_DB_POOL_SIZE", "database connections per process (0: sized to the machine)", default=0
    )
    read_coalesce_window: Seconds = setting(
        "PPOS_READ_COALESCE_WINDOW",
        "PostgreSQL: how long a read sent again within this window waits to share one "
        "statement with the same reads arriving meanwhile (0s: never waits)",
        default=Seconds(0.002),
    )
    migrate_on_start: bool = setting(
        "PPOS_MIGRATE_ON_START", "apply pending migrations at start-up", default=True
    )
    event_loop: str = setting(
        "PPOS_EVENT_LOOP",
        "uvloop (libuv; the default: a third less event-loop time per streamed message, "
        "measured) or asyncio (the standard library's loop)",
        default="uvloop",
    )
    log_level: str = setting("PPOS_LOG_LEVEL", "debug, info, warning or error", default="info")
    log_format: str = setting(
        "PPOS_LOG_FORMAT", "auto (JSON off a TTY), json or console", default="auto"
    )
    shutdown_grace: Seconds = setting(
        "PPOS_SHUTDOWN_GRACE",
        "time in-flight calls get to finish on SIGTERM/SIGINT",
        default=Seconds(10),
    )
    metrics_listen: str = setting(
        "PPOS_METRICS_LISTEN",
        "host:port to serve Prometheus metrics on (/metrics); empty means off",
        default="",
    )
    health_probe_interval: Seconds = setting(
        "PPOS_HEALTH_PROBE_INTERVAL",
        "how often health re-checks the database and its migrations",
        default=Seconds(5),
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'control-plane.db'}"

    def validate(self) -> None:
        unknown = [s for s in self.services if s not in SERVICE_NAMES]
        if unknown or not self.services:
            raise ConfigError(
                f"--service: unknown {unknown or 'empty list'}; "
                f"choose from {', '.join(SERVICE_NAMES)}"
            )
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"--listen: {self.listen!r} is not host:port")
        if self.log_format not in {"auto", "json", "console"}:
            raise ConfigError(f"--log-format: {self.log_format!r} is not auto, json or console")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"--event-loop: {self.event_loop!r} is not uvloop or asyncio")
        if not 0 <= self.read_coalesce_window <= 1:
            raise ConfigError("PPOS_READ_COALESCE_WINDOW must be between 0s and 1s")
        if self.db_pool_size < 0:
            raise ConfigError("--db-pool-size: must not be negative")
        if self.shutdown_grace < 0:
            raise ConfigError("--shutdown-grace: must not be negative")
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ConfigError(f"--metrics-listen: {self.metrics_listen!r} is not host:port")
        if not 0 < self.health_probe_interval <= 300:
            raise ConfigError("--health-probe-interval: must be between 0 and 5m")


@dataclasses.dataclass(frozen=True)
class DatabaseRoleSettings:
    """Database roles (PostgreSQL): what migrating sets up for the services to log in as."""

    db_role_prefix: str = setting(
        "PPOS_DB_ROLE_PREFIX",
        "migrate gives each service's privileges to the NOLOGIN role PREFIX_svc_SERVICE",
        default="ppos",
    )
    governance_database_url: Secret | None = setting(
        "PPOS_GOVERNANCE_DATABASE_URL",
        "migrate: the URL governance connects with; its user becomes a login role "
        "(created, password set) holding governance's privileges only",
        default=None,
        secret=True,
    )
    noderegistry_database_url: Secret | None = setting(
        "PPOS_NODEREGISTRY_DATABASE_URL",
        "migrate: the URL the node registry connects with (as for governance)",
        default=None,
        secret=True,
    )
    registrysync_database_url: Secret | None = setting(
        "PPOS_REGISTRYSYNC_DATABASE_URL",
        "migrate: the URL the registry sync connects with (as for governance); services "
        "given the same user share one login with the union of their privileges",
        default=None,
        secret=True,
    )

    def validate(self) -> None:
        if not _ROLE_PREFIX.fullmatch(self.db_role_prefix):
            raise ConfigError(
                "--db-role-prefix: 1 to 40 lower-case letters, digits or _, starting with a letter"
            )

    def role_plan(self) -> RolePlan:
        """The roles to set up (the service URLs are taken: asked once)."""
        self.validate()
        given = {
            "governance": self.governance_database_url,
            "noderegistry": self.noderegistry_database_url,
            "registrysync": self.registrysync_database_url,
        }
        urls = {service: (url.take() or "") if url else "" for service, url in given.items()}
        try:
            logins = logins_from_urls(urls)
        except RoleError as exc:
            raise ConfigError(f"PPOS_<SERVICE>_DATABASE_URL: {exc}") from None
        return RolePlan(prefix=self.db_role_prefix, logins=logins)


_ROLE_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    """Authentication: the control token, signing keys and token lifetimes."""

    control_token: Secret | None = setting(
        "PPOS_CONTROL_TOKEN",
        "operator bearer token (at least 32 characters); never passed as a flag",
        default=None,
        secret=True,
    )
    control_token_file: Path | None = setting(
        "PPOS_CONTROL_TOKEN_FILE", "file holding the operator bearer token", default=None
    )
    signing_key_file: Path | None = setting(
        "PPOS_SIGNING_KEY_FILE",
        "EC P-256 private key (PKCS#8 PEM) to sign with; default: keys generated in the key dir",
        default=None,
    )
    key_dir: Path | None = setting(
        "PPOS_KEY_DIR", "directory of generated signing keys (default: DATA_DIR/keys)", default=None
    )
    extra_jwks_file: Path | None = setting(
        "PPOS_EXTRA_JWKS_FILE",
        "JWKS of further public keys to accept (keys rotated out elsewhere)",
        default=None,
    )
    jwks_file: Path | None = setting(
        "PPOS_JWKS_FILE",
        "where to publish the public key set (default: DATA_DIR/jwks.json)",
        default=None,
    )
    issuer: str = setting(
        "PPOS_JWT_ISSUER", "iss of every token this plane signs", default="ppos-control-plane"
    )
    preflight_jwt_ttl: Seconds = setting(
        "PPOS_PREFLIGHT_JWT_TTL",
        "lifetime of a minted PREFLIGHT_JWT (at most 5m)",
        default=Seconds(60),
    )
    clock_leeway: Seconds = setting(
        "PPOS_CLOCK_LEEWAY", "clock skew tolerated when checking exp and iat", default=Seconds(5)
    )
    node_credential_ttl: Seconds = setting(
        "PPOS_NODE_CREDENTIAL_TTL", "lifetime of a node credential", default=Seconds(86400)
    )
    key_overlap: Seconds = setting(
        "PPOS_KEY_OVERLAP",
        "how long a rotated-out key stays published and accepted",
        default=Seconds(900),
    )

    def validate(self) -> None:
        if not 1 <= self.preflight_jwt_ttl <= 300:
            raise ConfigError("--preflight-jwt-ttl: must be between 1s and 5m")
        if not 0 <= self.clock_leeway <= 60:
            raise ConfigError("--clock-leeway: must be between 0 and 60s")
        if not 60 <= self.node_credential_ttl <= 30 * 86400:
            raise ConfigError("--node-credential-ttl: must be between 1m and 30d")
        if not self.issuer:
            raise ConfigError("--issuer: must not be empty")


@dataclasses.dataclass(frozen=True)
class PeerSettings:
    """Peers: where the other services are (default: this process, when it hosts them)."""

    governance_address: str = setting(
        "PPOS_PEER_GOVERNANCE", "host:port of the governance service", default=""
    )
    node_registry_address: str = setting(
        "PPOS_PEER_NODEREGISTRY", "host:port of the node registry service", default=""
    )
    registry_sync_address: str = setting(
        "PPOS_PEER_REGISTRYSYNC", "host:port of the registry sync service", default=""
    )
    peer_call_timeout: Seconds = setting(
        "PPOS_PEER_CALL_TIMEOUT", "deadline of a call to a peer service", default=Seconds(10)
    )

    def address_of(self, service: str) -> str:
        return {
            "governance": self.governance_address,
            "noderegistry": self.node_registry_address,
            "registrysync": self.registry_sync_address,
        }[service]


# --- TLS (listener and outbound channels) -------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsSettings:
    """TLS: the listener's identity, the clients it accepts, the CA it trusts.

    The files are read again when they change, without a restart.
    """

    cert_file: Path | None = setting(
        "PPOS_TLS_CERT_FILE",
        "PEM certificate chain of the gRPC listener (TLS on when set; with PPOS_TLS_KEY_FILE)",
        default=None,
        flag="--tls-cert-file",
    )
    key_file: Path | None = setting(
        "PPOS_TLS_KEY_FILE",
        "PEM private key of the listener's certificate",
        default=None,
        flag="--tls-key-file",
    )
    client_ca_file: Path | None = setting(
        "PPOS_TLS_CLIENT_CA_FILE",
        "PEM CA bundle clients must present a certificate from (mutual TLS when set)",
        default=None,
        flag="--tls-client-ca-file",
    )
    ca_file: Path | None = setting(
        "PPOS_TLS_CA_FILE",
        "PEM CA bundle the servers this process calls are checked against "
        "(peers, regional registries and gateways; TLS outbound when set)",
        default=None,
        flag="--tls-ca-file",
    )
    client_cert_file: Path | None = setting(
        "PPOS_TLS_CLIENT_CERT_FILE",
        "PEM certificate this process presents to the servers it calls "
        "(default: PPOS_TLS_CERT_FILE)",
        default=None,
        flag="--tls-client-cert-file",
    )
    client_key_file: Path | None = setting(
        "PPOS_TLS_CLIENT_KEY_FILE",
        "private key of the client certificate (default: PPOS_TLS_KEY_FILE)",
        default=None,
        flag="--tls-client-key-file",
    )
    allow_plaintext: bool = setting(
        "PPOS_ALLOW_PLAINTEXT",
        "serve plaintext on an address other than loopback (refused otherwise)",
        default=False,
    )

    @property
    def outbound_cert_file(self) -> Path | None:
        return self.client_cert_file or self.cert_file

    @property
    def outbound_key_file(self) -> Path | None:
        return self.client_key_file or self.key_file

    def server_identity(self) -> ServerTls | None:
        """The listener's TLS (re-read when its files change); None: plaintext."""
        if self.cert_file is None or self.key_file is None:
            return None
        return ServerTls(self.cert_file, self.key_file, self.client_ca_file)

    def client_identity(self) -> ClientTls | None:
        """The identity of every channel out (peers, registries, gateways); None: plaintext."""
        if self.ca_file is None:
            return None
        return ClientTls(self.ca_file, self.outbound_cert_file, self.outbound_key_file)

    def validate(self, listen: str) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("--tls-cert-file and --tls-key-file: give both or neither")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ConfigError(
                "--tls-client-cert-file and --tls-client-key-file: give both or neither"
            )
        if self.client_ca_file is not None and self.cert_file is None:
            raise ConfigError("--tls-client-ca-file: needs --tls-cert-file and --tls-key-file")
        if self.cert_file is not None and self.ca_file is None:
            raise ConfigError(
                "--tls-ca-file: needed with --tls-cert-file (services hosted here "
                "call each other through the TLS port)"
            )
        for name, path in dataclasses.asdict(self).items():
            if isinstance(path, Path) and not path.is_file():
                raise ConfigError(f"--tls-{name.replace('_', '-')}: {path} is not a readable file")
        host = listen.rpartition(":")[0]
        if self.cert_file is None and not self.allow_plaintext and not is_loopback_host(host):
            raise ConfigError(
                f"--listen: {listen} is not loopback and TLS is off; set PPOS_TLS_CERT_FILE "
                "and PPOS_TLS_KEY_FILE, or PPOS_ALLOW_PLAINTEXT=true if plaintext is intended"
            )
