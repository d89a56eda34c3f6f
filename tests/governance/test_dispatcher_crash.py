"""Kill the dispatcher (a real process, SIGKILL) mid-delivery: every command is delivered
once in effect after a restart. The gateway is the simulated one, in this process."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.storage.database import Database
from tests.governance.conftest import public_verifier
from tests.governance.processes import start_plane_process
from tests.governance.support import count, eventually, start_gateway
from tests.support.canary import scan_files, scan_text
from tests.support.databases import GOVERNANCE_ROLE, runtime_url

pytestmark = pytest.mark.slow
QUEUES = 5


def plane_env(database_url: str, data_dir: Path, token: str, gateway: str) -> dict[str, str]:
    return {
        "PPOS_CONTROL_TOKEN": token,
        # Governance alone, as its own login: no grant on any other service's rows.
        "PPOS_DATABASE_URL": runtime_url(database_url, GOVERNANCE_ROLE),
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_SERVICES": "governance",
        "PPOS_GATEWAYS": f"eu-west-1={gateway}",
        "PPOS_DB_POOL_SIZE": "4",
        "PPOS_SHUTDOWN_GRACE": "1s",
        "PPOS_OUTBOX_POLL_INTERVAL": "50ms",
        "PPOS_OUTBOX_BACKOFF_BASE": "50ms",
        "PPOS_OUTBOX_BACKOFF_MAX": "400ms",
        "PPOS_OUTBOX_BATCH_SIZE": "2",
        "PPOS_OUTBOX_CONCURRENCY": "2",
        "PPOS_OUTBOX_TARGET_CONCURRENCY": "2",
        "PPOS_OUTBOX_CALL_TIMEOUT": "4s",
        "PPOS_OUTBOX_LEASE": "5s",
        "PPOS_GOVERNANCE_BACKGROUND": "dispatcher",
    }


async def test_sigkill_mid_delivery_then_restart_delivers_every_command_once(
    database_url: str, tmp_path: Path, canary_token: str
) -> None:
    data_dir = tmp_path / "data"
    verifier = public_verifier(data_dir / "keys")
    gateway = await start_gateway("eu-west-1", verifier)
    sim = gateway.sim
    # The gateway acts at once but answers late: a kill now leaves commands done
    # at the gateway and unacknowledged in the outbox.
    sim.faults.slow_ack_seconds = 3.0
    env = plane_env(database_url, data_dir, canary_token, gateway.address)
    db = Database(database_url, pool_size=2)
    reader = types.SimpleNamespace(db=db)
    first = await start_plane_process(env, tmp_path / "plane-1.log")
    second = None
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = gov_grpc.GovernanceServiceStub(channel)
            await stub.ProvisionTenant(
                pb.ProvisionTenantRequest(
                    request_id="crash-1",
                    tenant_id="acme",
                    spec=res.TenantSpec(default_region="eu-west-1"),
                    queues=[
                        pb.QueueTemplate(queue_id=f"queue-{i}", spec=res.QueueSpec(capacity=i + 1))
                        for i in range(QUEUES)
                    ],
                ),
                metadata=(("authorization", f"Bearer {canary_token}"),),
                timeout=20,
            )
        # A batch of two is in flight: acted on at the gateway, not acknowledged.
        await eventually(lambda: sim.in_flight, lambda n: n == 2, within=30)
        assert count(reader, "outbox_commands", "state = 'SENT'") == 2
        await first.kill()
        sim.faults.slow_ack_seconds = 0.0
        assert count(reader, "outbox_commands", "state = 'ACKNOWLEDGED'") == 0
        second = await start_plane_process(env, tmp_path / "plane-2.log")
        await eventually(
            lambda: count(reader, "outbox_commands", "state = 'ACKNOWLEDGED'"),
            lambda n: n == QUEUES,
            within=60,
        )
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        await gateway.stop()
    applied = Counter(c.idempotency_key for c in sim.applied())
    assert len(applied) == QUEUES
    assert set(applied.values()) == {1}, "each command was acted on once"
    duplicates = [c for c in sim.calls if c.outcome == "duplicate"]
    assert len(duplicates) == 2, "the two cut off by the kill were re-sent, and recognised"
    rows = db.read_sync(
        lambda s: s.execute(text("SELECT attempts, receiver_duplicate FROM outbox_commands")).all()
    )
    assert sorted((int(a), bool(d)) for a, d in rows) == [(1, False)] * 3 + [(2, True)] * 2
    for capacity in range(1, QUEUES + 1):
        assert sim.state.queues[("acme", f"queue-{capacity - 1}")]["capacity"] == capacity
    db.close()
    for process in (first, second):
        assert process is not None
        assert scan_text("plane log", "".join(process.lines), canary_token) == []
    assert scan_files(tmp_path, canary_token) == []
