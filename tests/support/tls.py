"""Certificate authorities made in memory for TLS tests (trustme): no key is committed.

`TlsFiles` writes one CA's certificate, a server certificate for loopback and a
client certificate under a directory, the way an operator's files are laid out,
with the plane's settings and a client's channel credentials to match.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import grpc
import trustme

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass
class TlsFiles:
    ca: trustme.CA
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def write(self) -> TlsFiles:
        """(Re)write every file from this CA: a server and a client certificate."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert(*LOOPBACK_NAMES)
        server.private_key_pem.write_to_path(str(self.server_key))
        write_chain(server, self.server_cert)
        client = self.ca.issue_cert("client.test", common_name="client.test")
        client.private_key_pem.write_to_path(str(self.client_key))
        write_chain(client, self.client_cert)
        return self

    def plane_env(self) -> dict[str, str]:
        """A plane's settings for mutual TLS with this CA."""
        return {
            "PPOS_TLS_CERT_FILE": str(self.server_cert),
            "PPOS_TLS_KEY_FILE": str(self.server_key),
            "PPOS_TLS_CLIENT_CA_FILE": str(self.ca_file),
            "PPOS_TLS_CA_FILE": str(self.ca_file),
        }

    def client_credentials(self, *, with_certificate: bool = True) -> grpc.ChannelCredentials:
        if not with_certificate:
            return grpc.ssl_channel_credentials(self.ca_file.read_bytes())
        return grpc.ssl_channel_credentials(
            self.ca_file.read_bytes(), self.client_key.read_bytes(), self.client_cert.read_bytes()
        )


def write_chain(cert: trustme.LeafCert, path: Path) -> None:
    path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))


def new_tls_files(directory: Path) -> TlsFiles:
    return TlsFiles(trustme.CA(), directory).write()


def expired_client(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A client certificate from `ca` that expired an hour ago: (cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    cert = ca.issue_cert(
        "expired.test",
        common_name="expired.test",
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(hours=1),
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_chain(cert, directory / "expired.pem")
    cert.private_key_pem.write_to_path(str(directory / "expired-key.pem"))
    return directory / "expired.pem", directory / "expired-key.pem"
