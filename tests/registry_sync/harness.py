"""Real simulated registries and real control planes wired together for sync tests.

The simulator is the shipped one (`ppos.preflightsim.cli.start`, the code
behind `ppos-preflight-sim`), in-process on a loopback port, verifying the
PREFLIGHT_JWT with the control plane's published keys. The control plane is
the real composition root with the real interceptors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.keys import KeyRing
from ppos.preflight.v1 import job_pb2
from ppos.preflightsim import cli as sim_cli
from ppos.preflightsim.feed import Feed
from ppos.preflightsim.records import SourceRecord
from tests.support.servers import RunningPlane, start_plane

REPO = Path(__file__).resolve().parents[2]
ODD_SAMPLES = REPO / "src/ppos/preflightsim/samples/odd.jsonl"
TERMINAL = {pb.SWEEP_STATE_SUCCEEDED, pb.SWEEP_STATE_FAILED, pb.SWEEP_STATE_CANCELLED}
# Fast timings for tests: no scheduled sweeps unless a test asks, quick polls and retries.
FAST_SYNC_ENV = {
    "PPOS_SYNC_INTERVAL": "0",
    "PPOS_SYNC_POLL_INTERVAL": "50ms",
    "PPOS_SYNC_LEADER_RETRY": "200ms",
    "PPOS_SYNC_RETRY_BASE": "10ms",
    "PPOS_SYNC_RETRY_MAX": "100ms",
    "PPOS_SYNC_CALL_TIMEOUT": "5s",
}


def prepare_keys(data_dir: Path) -> Path:
    """Create the plane's signing keys up front and publish jwks.json (what the sim reads)."""
    ring = KeyRing.from_directory(data_dir / "keys")
    jwks = data_dir / "jwks.json"
    ring.write_jwks(jwks)
    return jwks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_simulator(
    region: str,
    jwks: Path,
    *,
    records: Sequence[Path] = (),
    synthetic: int = 0,
    synthetic_size: int = 2048,
    extra: Sequence[str] = (),
    port: int = 0,
) -> sim_cli.RunningSimulator:
    argv = [
        "--region",
        region,
        "--listen",
        f"127.0.0.1:{port}",
        "--jwks-file",
        str(jwks),
        *[arg for path in records for arg in ("--records", str(path))],
        *extra,
    ]
    if synthetic:
        argv += ["--synthetic", str(synthetic), "--synthetic-size", str(synthetic_size)]
    return await sim_cli.start(sim_cli.build_parser().parse_args(argv))


def sync_env(regions: Mapping[str, int], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(FAST_SYNC_ENV)
    env["PPOS_SYNC_REGIONS"] = ",".join(f"{r}=127.0.0.1:{p}" for r, p in regions.items())
    env.update(extra or {})
    return env


async def start_sync_plane(
    *,
    token: str,
    database_url: str,
    data_dir: Path,
    secrets: SecretRegistry,
    regions: Mapping[str, int],
    extra_env: Mapping[str, str] | None = None,
) -> RunningPlane:
    return await start_plane(
        token=token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=secrets,
        extra_env=sync_env(regions, extra_env),
    )


@dataclass
class SyncWorld:
    """One plane syncing some simulated regions, and the helpers tests need."""

    plane: RunningPlane
    sims: dict[str, sim_cli.RunningSimulator]

    @property
    def stub(self) -> pb_grpc.RegistrySyncServiceStub:
        return pb_grpc.RegistrySyncServiceStub(self.plane.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return self.plane.operator

    def feed(self, region: str) -> Feed:
        return self.sims[region].registry.feed

    async def start_sweep(self, *regions: str, request_id: str = "") -> pb.Sweep:
        reply = await self.stub.StartSweep(
            pb.StartSweepRequest(regions=list(regions), request_id=request_id), metadata=self.md
        )
        return reply.sweep

    async def wait_sweep(self, sweep_id: str, *, limit: float = 120.0) -> pb.Sweep:
        """Poll until the sweep ends (the limit only stops a hung test; it asserts nothing)."""
        async with asyncio.timeout(limit):
            while True:
                reply = await self.stub.GetSweep(
                    pb.GetSweepRequest(sweep_id=sweep_id), metadata=self.md
                )
                if reply.sweep.state in TERMINAL:
                    return reply.sweep
                await asyncio.sleep(0.05)

    async def sweep(self, *regions: str) -> pb.Sweep:
        started = await self.start_sweep(*regions)
        return await self.wait_sweep(started.sweep_id)

    async def status(self, region: str) -> pb.RegionSyncStatus:
        reply = await self.stub.GetSyncStatus(
            pb.GetSyncStatusRequest(region=region), metadata=self.md
        )
        return reply.status

    async def wait_status(
        self, region: str, predicate: Callable[[pb.RegionSyncStatus], bool], *, limit: float = 60
    ) -> pb.RegionSyncStatus:
        """The first status WatchSyncStatus streams that satisfies `predicate`."""
        call = self.stub.WatchSyncStatus(
            pb.WatchSyncStatusRequest(regions=[region]), metadata=self.md
        )
        try:
            async with asyncio.timeout(limit):
                async for reply in call:
                    if predicate(reply.status):
                        return reply.status
        finally:
            call.cancel()
        raise AssertionError("the status stream ended")

    async def all_jobs(self, region: str = "", *, omit_payload: bool = False) -> list[pb.SyncedJob]:
        jobs: list[pb.SyncedJob] = []
        after = 0
        while True:
            reply = await self.stub.ListSyncedJobs(
                pb.ListSyncedJobsRequest(
                    region=region,
                    after_sync_sequence=after,
                    page_size=1000,
                    omit_payload=omit_payload,
                ),
                metadata=self.md,
            )
            jobs.extend(reply.jobs)
            after = reply.last_sync_sequence
            if not reply.has_more:
                return jobs

    async def quarantine(self, region: str = "") -> list[pb.QuarantinedRecord]:
        out: list[pb.QuarantinedRecord] = []
        token = ""
        while True:
            reply = await self.stub.ListQuarantinedRecords(
                pb.ListQuarantinedRecordsRequest(region=region, page_token=token, page_size=1000),
                metadata=self.md,
            )
            out.extend(reply.records)
            token = reply.next_page_token
            if not token:
                return out


def feed_records(feed: Feed) -> list[job_pb2.JobRecord]:
    return [feed.record(position) for position in range(1, len(feed) + 1)]


def source_key(record: SourceRecord | job_pb2.JobRecord) -> tuple[str, int]:
    return (record.job_id, record.revision)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def write_faults(path: Path, faults: dict[str, Any]) -> None:
    """Replace the simulator's fault file atomically (it re-reads it when it changes)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(faults))
    tmp.replace(path)


async def call_error(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded; an error was expected")
