"""The simulated registry speaks its contract: info, bounded pages after a cursor, a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.peers import registry_audience
from ppos.controlplane.security.tokens import TokenMinter
from ppos.preflight.v1 import registry_service_pb2 as pb
from ppos.preflight.v1 import registry_service_pb2_grpc as pb_grpc
from ppos.preflightsim.cli import RunningSimulator, StartError, build_parser, start
from tests.registry_sync.harness import ODD_SAMPLES, call_error, prepare_keys, start_simulator

REGION = "eu-west-1"
SERVICE = "/ppos.preflight.v1.PreflightRegistryService"


class Caller:
    """Calls the simulator the way the sync does: through an outbound channel that
    mints a fresh PREFLIGHT_JWT per call, bound to its request."""

    def __init__(self, minter: TokenMinter, address: str) -> None:
        self.channel = open_channel(
            address,
            minter,
            audience=registry_audience(REGION),
            subject="ppos.controlplane.registrysync",
        )
        self.stub = pb_grpc.PreflightRegistryServiceStub(self.channel)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[RunningSimulator, Caller]]:
    data = tmp_path / "data"
    jwks = prepare_keys(data)
    minter = TokenMinter(KeyRing.from_directory(data / "keys"), issuer="ppos-control-plane")
    running = await start_simulator(
        REGION, jwks, records=[ODD_SAMPLES], synthetic=40, synthetic_size=3000
    )
    caller = Caller(minter, f"127.0.0.1:{running.port}")
    yield running, caller
    await caller.channel.close()
    await running.stop(0)


async def test_info_pages_and_stream_agree(sim: tuple[RunningSimulator, Caller]) -> None:
    running, caller = sim
    feed = running.registry.feed
    info = await caller.stub.GetRegistryInfo(pb.GetRegistryInfoRequest())
    assert (info.region, info.total_changes, info.head_cursor) == (
        REGION,
        len(feed),
        feed.head_cursor,
    )
    paged = []
    cursor = ""
    while True:
        page = await caller.stub.ListJobChanges(
            pb.ListJobChangesRequest(after_cursor=cursor, page_size=7, max_page_bytes=10_000),
        )
        assert 1 <= len(page.records) <= 7
        # The byte limit is soft: a page stops once it would pass it, with one record at least.
        sizes = [len(r.canonical_payload) for r in page.records]
        assert len(sizes) == 1 or sum(sizes[:-1]) <= 10_000
        paged.extend(page.records)
        cursor = page.next_cursor
        assert page.remaining_changes == len(feed) - len(paged)
        if page.end_of_feed:
            break
    assert cursor == feed.head_cursor
    streamed = []
    async for page in caller.stub.StreamJobChanges(pb.StreamJobChangesRequest(page_size=9)):
        streamed.extend(page.records)
    assert paged == streamed == [feed.record(p) for p in range(1, len(feed) + 1)]
    assert [r.cursor for r in paged] == [feed.cursor(p) for p in range(1, len(feed) + 1)]


async def test_cursors_from_elsewhere_are_refused(sim: tuple[RunningSimulator, Caller]) -> None:
    running, caller = sim
    for cursor in ("nonsense", "0badfeed.0000000001", running.registry.feed.cursor(999)):
        error = await call_error(
            caller.stub.ListJobChanges(pb.ListJobChangesRequest(after_cursor=cursor))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, cursor
    error = await call_error(caller.stub.ListJobChanges(pb.ListJobChangesRequest(page_size=-1)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_simulator_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    jwks = prepare_keys(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"jobId": "job_1_00001", "canonicalPayload": {}, "colour": "red"}\n')
    args = build_parser().parse_args(
        [
            "--region",
            REGION,
            "--listen",
            "127.0.0.1:0",
            "--jwks-file",
            str(jwks),
            "--records",
            str(bad),
        ]
    )
    with pytest.raises(StartError, match=r"bad\.jsonl:1: unknown keys \['colour'\]"):
        await start(args)
    args = build_parser().parse_args(
        ["--region", REGION, "--listen", "127.0.0.1:0", "--jwks-file", str(jwks),
         "--fault-malformed-at", "3:explode"]
    )  # fmt: skip
    with pytest.raises(StartError, match="unknown malformed kinds"):
        await start(args)
