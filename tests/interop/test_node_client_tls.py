"""The Node.js operator client (tests/interop/node/operator_client.js) over mutual
TLS: with the CA and a client certificate every step is answered as over
plaintext; without the certificate nothing gets past the handshake."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from typing import Any

import pytest

from tests.support.external import ROOT
from tests.support.servers import RunningPlane

pytestmark = pytest.mark.interop
SCRIPT = ROOT / "tests" / "interop" / "node" / "operator_client.js"


async def _run(env: dict[str, str]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make setup` (Node.js is part of the tool chain)")
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        env["PPOS_ADDRESS"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_node_operator_client_over_mutual_tls(
    mtls_plane: RunningPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    token_file = tmp_path_factory.mktemp("operator") / "token"  # outside the scanned tree
    token_file.write_text(mtls_plane.token + "\n")
    token_file.chmod(0o600)
    env = {
        "PPOS_ADDRESS": mtls_plane.address,
        "PPOS_CONTROL_TOKEN_FILE": str(token_file),
        **mtls_plane.tls_env(),
    }
    steps = {record["step"]: record for record in await _run(env)}
    assert steps["jwks"]["ok"] is True
    assert steps["without-token"]["status"] == "UNAUTHENTICATED"
    assert steps["create-enrollment"]["ok"] is True
    assert steps["get-missing-node"]["status"] == "NOT_FOUND"

    without_certificate = {
        k: v for k, v in env.items() if k not in ("PPOS_CERT_FILE", "PPOS_KEY_FILE")
    }
    refused = {record["step"]: record for record in await _run(without_certificate)}
    assert refused["jwks"]["status"] == "UNAVAILABLE"
    assert refused["create-enrollment"]["status"] == "UNAVAILABLE"
