"""Memory a caller can drive with large bodies: a `serve` process, run as
operators run it, keeps its resident size within 100 MB of where it started
after 200 refused 8 MB bodies without a credential, 200 refused 1 MB bodies
that reach the edge, and 200 authenticated requests carrying 1 MB ids (refused
by their size, or decoded and refused by validation).

Each refusal must free its request at once: nothing of a refused call may
wait for the cyclic collector (see security/edge.py on abort). RSS is a
memory figure, read from /proc; the test asserts no timing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.processes import ServeProcess, spawn_serve
from tests.support.protowire import length_delimited

pytestmark = pytest.mark.slow

GOVERNANCE = "/ppos.controlplane.governance.v1.GovernanceService"
GET_TENANT = f"{GOVERNANCE}/GetTenant"
PROVISION_TENANT = f"{GOVERNANCE}/ProvisionTenant"
ROUNDS = 200
IN_FLIGHT = 8
ALLOWED_GROWTH_MB = 100.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _send(
    address: str, method: str, body: bytes, metadata: tuple[tuple[str, str], ...] | None
) -> dict[str, int]:
    """`ROUNDS` calls of `body`, `IN_FLIGHT` at a time: status codes counted."""
    codes: dict[str, int] = {}
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(method)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> None:
            async with slots:
                try:
                    await call(body, metadata=metadata, timeout=60)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(one() for _ in range(ROUNDS)))
    return codes


@pytest.fixture
def serve(database_url: str, tmp_path: Path, canary_token: str) -> Iterator[ServeProcess]:
    process = spawn_serve(data_dir=tmp_path / "data", token=canary_token, database_url=database_url)
    try:
        process.wait_serving(timeout=60)
        yield process
    finally:
        process.kill()
        assert canary_token not in process.log(), "control token printed by the server"


async def test_refused_large_bodies_leave_memory_where_it_was(
    serve: ServeProcess, canary_token: str
) -> None:
    operator = (("authorization", f"Bearer {canary_token}"),)
    pid = serve.process.pid
    # Ordinary calls first, so what any first call builds is in the baseline.
    await _send(serve.address, GET_TENANT, length_delimited(1, b"acme"), operator)
    await _send(serve.address, GET_TENANT, length_delimited(1, b"acme"), None)
    start = _rss_mb(pid)
    one_mb_id = b"t" * 1_000_000
    steps = [
        # Over the transport's limit: refused before our code runs.
        ("8 MB, no credential", GET_TENANT, length_delimited(1, b"t" * (8 << 20)), None),
        # Under it: the edge refuses the caller, the body is never decoded.
        ("1 MB, no credential", PROVISION_TENANT, length_delimited(2, one_mb_id), None),
        # A 1 MB id: over GetTenant's limit, refused by its size before decoding...
        ("1 MB id, GetTenant", GET_TENANT, length_delimited(1, one_mb_id), operator),
        # ...and within ProvisionTenant's: decoded, validated, refused.
        (
            "1 MB id, ProvisionTenant",
            PROVISION_TENANT,
            length_delimited(1, b"req_1") + length_delimited(2, one_mb_id),
            operator,
        ),
    ]
    expected = {
        "8 MB, no credential": "RESOURCE_EXHAUSTED",
        "1 MB, no credential": "UNAUTHENTICATED",
        "1 MB id, GetTenant": "INVALID_ARGUMENT",
        "1 MB id, ProvisionTenant": "INVALID_ARGUMENT",
    }
    for name, method, body, metadata in steps:
        codes = await _send(serve.address, method, body, metadata)
        assert codes == {expected[name]: ROUNDS}, name
        grown = _rss_mb(pid) - start
        assert grown < ALLOWED_GROWTH_MB, f"{name}: RSS grew {grown:.0f} MB from {start:.0f} MB"
    events = [json.loads(line) for line in serve.log().splitlines() if line.startswith("{")]
    assert events, "no log lines read"
    assert [event for event in events if event.get("level") in ("error", "critical")] == []
