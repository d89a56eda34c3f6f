"""TLS identities from PEM files, picked up again when the files change.

A listener's credentials are grpc's dynamic SSL server credentials: before each
new handshake grpc asks `ServerTls.fetch` for a certificate configuration, and
it answers with a new one only when a file's stamp (inode, size, mtime) moved.
Connections already open keep the identity they were made with.

An outbound identity (`ClientTls`) is read when a channel is made; channels
made from it compare its stamp now and then and are made again when it moved
(see security/outbound.py).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc
import structlog

_log = structlog.get_logger("ppos.tls")

Stamp = tuple[tuple[int, int, int], ...]


def stamp_of(*files: Path | None) -> Stamp:
    """What changes when any of `files` is replaced or rewritten (missing: zeros)."""
    result = []
    for path in files:
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            result.append((0, 0, 0))
        else:
            result.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(result)


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed); anything else is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerTls:
    """A listener's certificate and key, and the CA its clients must be signed by.

    With `client_ca_file`, a client without a certificate from that CA is
    refused at the handshake (mutual TLS).
    """

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._lock = threading.Lock()  # grpc fetches from its own threads
        self._stamp = self._current_stamp()
        self._initial = self._configuration()

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _current_stamp(self) -> Stamp:
        return stamp_of(self.cert_file, self.key_file, self.client_ca_file)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (self.key_file.read_bytes(), self.cert_file.read_bytes())
        roots = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's fetcher: a new configuration when the files changed, else None."""
        stamp = self._current_stamp()
        with self._lock:
            if stamp == self._stamp:
                return None
            try:
                configuration = self._configuration()
            except OSError as exc:  # half-replaced files: keep the identity in force
                _log.warning("tls.reload_failed", file=exc.filename, error=exc.strerror)
                return None
            self._stamp = stamp
        _log.info("tls.reloaded", cert_file=str(self.cert_file))
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        # grpc's stubs say the fetcher returns a configuration; its docs: None
        # means "keep the current one", which is what an unchanged file wants.
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self.mutual
        )


class ClientTls:
    """An outbound TLS identity: the CA bundle servers are checked against and,
    for mutual TLS, this side's certificate and key."""

    def __init__(
        self, ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file

    def stamp(self) -> Stamp:
        return stamp_of(self.ca_file, self.cert_file, self.key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )
