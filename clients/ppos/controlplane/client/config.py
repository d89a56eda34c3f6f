"""Where the control plane is and how to prove we are its operator.

The control token comes from a file (`--token-file`, `PPOS_CONTROL_TOKEN_FILE`)
or the environment (`PPOS_CONTROL_TOKEN`), never from a command-line argument,
where every user of the machine could read it in `ps`. It is read once, kept
only in memory, and sent only as `authorization: Bearer ...` on calls that need
it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ppos.controlplane.client.errors import ConfigurationError

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
ENV_ADDRESS = "PPOS_ADDRESS"
ENV_TOKEN = "PPOS_CONTROL_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_TOKEN_FILE = "PPOS_CONTROL_TOKEN_FILE"  # noqa: S105 - a variable name
ENV_TIMEOUT = "PPOS_TIMEOUT"
ENV_CA_FILE = "PPOS_CA_FILE"
ENV_CERT_FILE = "PPOS_CERT_FILE"
ENV_KEY_FILE = "PPOS_KEY_FILE"
# When the services run apart (one container each), where each one is.
SERVICE_ADDRESS_ENV = {
    "governance": "PPOS_GOVERNANCE_ADDRESS",
    "noderegistry": "PPOS_NODEREGISTRY_ADDRESS",
    "registrysync": "PPOS_REGISTRYSYNC_ADDRESS",
}
# RFC 6750 b64token: what may travel in the header.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_HOST_PORT = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}"
_IPV4_PORT = r"\d{1,3}(\.\d{1,3}){3}:\d{1,5}"
# host:port, dns:///host:port (every address the name resolves to), or an
# ipv4: list of addresses (calls round-robin over them; see connection.py).
_ADDRESS = re.compile(rf"^(dns:///)?{_HOST_PORT}$|^ipv4:{_IPV4_PORT}(,{_IPV4_PORT})*$")


@dataclass(frozen=True)
class Token:
    """The control token and where it came from (never printed)."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<control token from {self.source}>"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE (and ABORTED with a request id): exponential backoff with
    full jitter, within the deadline."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0


@dataclass(frozen=True)
class ClientConfig:
    """Everything a connection needs."""

    address: str = DEFAULT_ADDRESS
    token: Token | None = None
    timeout: float = DEFAULT_TIMEOUT
    # A label for the holder's own use (the portal shows it); never sent: the
    # server names whoever holds the credential.
    operator: str = ""
    ca_file: Path | None = None
    # Client certificate and key for mutual TLS (with ca_file).
    cert_file: Path | None = None
    key_file: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    warnings: tuple[str, ...] = ()
    service_addresses: dict[str, str] = field(default_factory=dict)

    def address_of(self, service: str) -> str:
        """Where `service` is: its own address when the services run apart, else `address`."""
        return self.service_addresses.get(service) or self.address

    def require_token(self) -> Token:
        if self.token is None:
            raise ConfigurationError(
                f"no control token: set {ENV_TOKEN_FILE} to a file holding it "
                f"(or pass --token-file FILE, or set {ENV_TOKEN})"
            )
        return self.token


def read_token_file(path: Path) -> tuple[Token, list[str]]:
    """The token in `path` (one trailing newline allowed), and warnings about the file."""
    warnings = []
    try:
        info = path.stat()
        value = path.read_text().removesuffix("\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot read token file {path}: {exc.strerror}") from None
    reachable = path.parent.stat().st_mode & (stat.S_IXGRP | stat.S_IXOTH)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and reachable:
        warnings.append(
            f"token file {path} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    return _checked(value, f"file {path}"), warnings


def _checked(value: str, source: str) -> Token:
    if not value:
        raise ConfigurationError(f"control token from {source} is empty")
    if not _TOKEN.fullmatch(value):
        raise ConfigurationError(
            f"control token from {source} holds characters a bearer token cannot "
            "(letters, digits and . _ ~ + / = - only)"
        )
    return Token(value, source)


def load_config(
    environ: Mapping[str, str] | None = None,
    *,
    address: str | None = None,
    token_file: Path | None = None,
    timeout: float | None = None,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ClientConfig:
    """Explicit arguments first, then the environment, then defaults."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    address = address or env.get(ENV_ADDRESS) or DEFAULT_ADDRESS
    if not _ADDRESS.fullmatch(address):
        raise ConfigurationError(
            f"address {address!r} is not host:port, dns:///host:port or ipv4:a:p,b:p"
        )
    service_addresses = {}
    for service, variable in SERVICE_ADDRESS_ENV.items():
        value = env.get(variable, "")
        if value and not _ADDRESS.fullmatch(value):
            raise ConfigurationError(f"{variable}: {value!r} is not host:port")
        if value:
            service_addresses[service] = value

    token: Token | None = None
    env_file = env.get(ENV_TOKEN_FILE) or None
    env_value = env.get(ENV_TOKEN) or None
    if token_file is not None:
        token, warnings = read_token_file(token_file)
    elif env_file and env_value:
        raise ConfigurationError(f"set {ENV_TOKEN_FILE} or {ENV_TOKEN}, not both")
    elif env_file:
        token, warnings = read_token_file(Path(env_file).expanduser())
    elif env_value:
        token = _checked(env_value, f"${ENV_TOKEN}")

    if timeout is None:
        raw = env.get(ENV_TIMEOUT)
        try:
            timeout = parse_seconds(raw) if raw else DEFAULT_TIMEOUT
        except ValueError as exc:
            raise ConfigurationError(f"{ENV_TIMEOUT}: {exc}") from None
    if timeout <= 0:
        raise ConfigurationError("timeout must be positive")

    ca_env = env.get(ENV_CA_FILE)
    ca = ca_file or (Path(ca_env).expanduser() if ca_env else None)
    if ca is not None and not ca.is_file():
        raise ConfigurationError(f"CA file {ca} does not exist")
    cert, key = _tls_identity(env, cert_file, key_file, ca)
    return ClientConfig(
        address=address,
        token=token,
        timeout=timeout,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        warnings=tuple(warnings),
        service_addresses=service_addresses,
    )


def _tls_identity(
    env: Mapping[str, str], cert_file: Path | None, key_file: Path | None, ca: Path | None
) -> tuple[Path | None, Path | None]:
    """The client certificate and key for mutual TLS: both or neither, with a CA."""
    cert_env, key_env = env.get(ENV_CERT_FILE), env.get(ENV_KEY_FILE)
    cert = cert_file or (Path(cert_env).expanduser() if cert_env else None)
    key = key_file or (Path(key_env).expanduser() if key_env else None)
    if (cert is None) != (key is None):
        raise ConfigurationError("a client certificate needs its key: give both or neither")
    if cert is not None and ca is None:
        raise ConfigurationError("a client certificate needs a CA file (TLS) too")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ConfigurationError(f"TLS file {path} does not exist")
    return cert, key


def channel_credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials of a connection (mutual with a client certificate); None: plaintext."""
    if config.ca_file is None:
        return None
    return grpc.ssl_channel_credentials(
        config.ca_file.read_bytes(),
        config.key_file.read_bytes() if config.key_file else None,
        config.cert_file.read_bytes() if config.cert_file else None,
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_seconds(text: str) -> float:
    """`250ms`, `30s`, `5m`, `1h`, `2d` or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 250ms, 30s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]
