"""What the edge counts as a pasted credential, and what it lets through."""

from __future__ import annotations

import secrets

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.credential_scan import CredentialScanner
from ppos.controlplane.security.keys import new_private_key
from tests.support import forge

TOKEN = "ppos_ct_" + secrets.token_urlsafe(32)
SCANNER = CredentialScanner(TOKEN)


def test_the_control_token_is_found_wherever_it_is_pasted() -> None:
    for text in (TOKEN, f"see {TOKEN}.", f"'{TOKEN}'", f"x={TOKEN}", f"{TOKEN}\n"):
        body = pb.CordonNodeRequest(node_id="node_1", reason=text).SerializeToString()
        assert SCANNER.holds_credential(body), text
    # A token of another format is recognised by its digest, not its prefix.
    other = "Zz" + secrets.token_urlsafe(40)
    assert CredentialScanner(other).holds_credential(f"reason: {other}!".encode())


def test_jws_shapes_and_our_prefixes_are_found() -> None:
    key = new_private_key()
    jwt = forge.sign(key, "kid", forge.node_claims("node_1", 1), typ="node+jwt")
    assert SCANNER.holds_credential(pb.CordonNodeRequest(reason=jwt).SerializeToString())
    assert SCANNER.holds_credential(b"ppos_enroll_abcdef")


def test_ordinary_values_pass() -> None:
    ordinary = [
        pb.CordonNodeRequest(node_id="node_01HZX3", reason="disk replacement").SerializeToString(),
        b"A" * 5000,  # a long run of the token's characters that is not the token
        TOKEN[8:].encode(),  # its random part alone is not the token
        ("eyJhbGciOi" * 3).encode(),  # base64 of JSON without the dots of a JWS
        "café ☕ ünïcode".encode(),
    ]
    for data in ordinary:
        assert not SCANNER.holds_credential(data), data[:40]


def test_a_metadata_value_is_scanned_as_its_bytes_and_a_clean_one_remembered() -> None:
    """Header values (text or bytes) get the answer their bytes get; a clean one
    asked again is answered from memory, one holding a credential never is, and
    what is remembered stays bounded."""
    scanner = CredentialScanner(TOKEN)
    agent = "grpc-python-asyncio/1.85.4 grpc-c/52.0.0 (linux; chttp2)"
    for _ in range(2):
        assert not scanner.value_holds_credential(agent)
        assert not scanner.value_holds_credential(agent.encode())
        assert scanner.value_holds_credential(f"x {TOKEN}")
        assert scanner.value_holds_credential(f"x {TOKEN}".encode())
        assert scanner.value_holds_credential("ppos_op_pasted")
    assert agent in scanner._clean
    assert f"x {TOKEN}" not in scanner._clean
    for index in range(10_000):
        assert not scanner.value_holds_credential(f"req-{index}")
    assert len(scanner._clean) <= 256
    assert scanner.value_holds_credential(f"x {TOKEN}")
