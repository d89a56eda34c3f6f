"""TLS of the simulator: its listener and its JWKS fetch, from PEM files.

Kept apart from the control plane's own TLS code on purpose: the simulator
stands for a regional service built by someone else, and imports nothing of
the plane but its generated contracts.

The listener's files are read again before a handshake when they changed
(grpc's dynamic SSL server credentials), so a renewed certificate is served
without a restart.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert-file", type=Path, help="PEM certificate chain to serve with")
    tls.add_argument("--tls-key-file", type=Path, help="its private key")
    tls.add_argument(
        "--tls-client-ca-file",
        type=Path,
        help="require client certificates from this CA bundle (mutual TLS)",
    )
    tls.add_argument(
        "--tls-ca-file",
        type=Path,
        help="CA bundle the control plane's certificate is checked against (--jwks-from)",
    )
    tls.add_argument(
        "--tls-client-cert-file",
        type=Path,
        help="certificate presented to the control plane (default: --tls-cert-file)",
    )
    tls.add_argument("--tls-client-key-file", type=Path, help="its key (default: --tls-key-file)")
    tls.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="serve plaintext on an address other than loopback (refused otherwise)",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the TLS arguments, or None."""
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        return "give --tls-cert-file and --tls-key-file together"
    if args.tls_client_ca_file is not None and args.tls_cert_file is None:
        return "--tls-client-ca-file needs --tls-cert-file and --tls-key-file"
    host = args.listen.rpartition(":")[0].strip("[]")
    if args.tls_cert_file is None and not args.allow_plaintext and not _loopback(host):
        return (
            f"--listen {args.listen} is not loopback and TLS is off; give --tls-cert-file "
            "and --tls-key-file, or --allow-plaintext if plaintext is intended"
        )
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            return f"--{name.replace('_', '-')}: {path} is not a readable file"
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stamp(files: tuple[Path | None, ...]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in files:
        if path is not None:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ReloadingServerCredentials:
    """The listener's identity, re-read before a handshake when its files changed."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._files = (cert, key, client_ca)
        self._lock = threading.Lock()  # grpc fetches on its own threads
        self._stamp = _stamp(self._files)
        self._initial = self._configuration()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, client_ca = self._files
        return grpc.ssl_server_certificate_configuration(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=client_ca.read_bytes() if client_ca else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = _stamp(self._files)
        with self._lock:
            if stamp == self._stamp:
                return None  # grpc keeps the configuration in force
            try:
                configuration = self._configuration()
            except OSError:
                return None  # a file being replaced: try again on the next handshake
            self._stamp = stamp
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self._files[2] is not None
        )


def server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    if args.tls_cert_file is None:
        return None
    return ReloadingServerCredentials(
        args.tls_cert_file, args.tls_key_file, args.tls_client_ca_file
    ).credentials()


def channel_credentials(args: argparse.Namespace) -> Callable[[], grpc.ChannelCredentials] | None:
    """Credentials of the JWKS fetch, read at each fetch (None: plaintext)."""
    if args.tls_ca_file is None:
        return None
    ca: Path = args.tls_ca_file
    cert: Path | None = args.tls_client_cert_file or args.tls_cert_file
    key: Path | None = args.tls_client_key_file or args.tls_key_file

    def read() -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            ca.read_bytes(),
            key.read_bytes() if key else None,
            cert.read_bytes() if cert else None,
        )

    return read
