"""Outbox leases pass between real plane processes with the default lease (3 s) and
poll interval (500 ms): the commands a replica is delivering are leased by another
within 2 s of a clean stop (SIGTERM), 5 s of a SIGKILL and 10 s of a SIGSTOP; the
frozen replica, woken (SIGCONT), changes nothing. The gateway acts on each command
once; every resend carries the command's own key. Both databases: replicas may share
a SQLite file too (outbox delivery needs no lead)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.storage.database import Database
from tests.governance.conftest import public_verifier
from tests.governance.processes import PlaneProcess, start_plane_process
from tests.governance.support import eventually, start_gateway
from tests.support.canary import scan_text

pytestmark = pytest.mark.slow
QUEUES = 3
# In this order: the frozen replica survives (and is the victim again, fenced and
# woken, at the clean stop); the killed one does not.
ROUNDS = ((signal.SIGSTOP, 0, 10.0), (signal.SIGKILL, 1, 5.0), (signal.SIGTERM, 0, 2.0))


def _env(database_url: str, data_dir: Path, token: str, gateway: str) -> dict[str, str]:
    return {
        "PPOS_CONTROL_TOKEN": token,
        "PPOS_DATABASE_URL": database_url,
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_SERVICES": "governance",
        "PPOS_GATEWAYS": f"eu-west-1={gateway}",
        "PPOS_DB_POOL_SIZE": "4",
        "PPOS_SHUTDOWN_GRACE": "1s",
        "PPOS_GOVERNANCE_BACKGROUND": "dispatcher",
    }


def _replica(plane: PlaneProcess) -> str:
    for line in plane.lines:
        if '"governance.started"' in line:
            return str(json.loads(line)["replica"])
    raise AssertionError("no governance.started line")


def _commands(db: Database, tenant: str) -> list[tuple[str, str, str, int]]:
    """(idempotency key, state, lease owner, attempts) of a tenant's commands."""

    def work(session: Any) -> list[tuple[str, str, str, int]]:
        rows = session.execute(
            text(
                "SELECT idempotency_key, state, lease_owner, attempts FROM outbox_commands "
                "WHERE subject LIKE :subject ORDER BY command_id"
            ),
            {"subject": f"queue/{tenant}/%"},
        )
        return [(str(k), str(s), str(o), int(a)) for k, s, o, a in rows]

    result: list[tuple[str, str, str, int]] = db.read_sync(work)
    return result


def _snapshot(db: Database) -> tuple[list[tuple[Any, ...]], int]:
    def work(session: Any) -> tuple[list[tuple[Any, ...]], int]:
        rows = [tuple(r) for r in session.execute(text("SELECT * FROM outbox_commands"))]
        audit = session.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
        return sorted(rows, key=str), int(audit)

    result: tuple[list[tuple[Any, ...]], int] = db.read_sync(work)
    return result


async def _provision(plane: PlaneProcess, token: str, tenant: str) -> None:
    if plane.process.returncode is not None:  # say how it ended rather than "refused"
        raise AssertionError(f"replica ended before its round: {plane.lines[-5:]}")
    async with grpc.aio.insecure_channel(plane.address) as channel:
        await gov_grpc.GovernanceServiceStub(channel).ProvisionTenant(
            pb.ProvisionTenantRequest(
                request_id=f"prov-{tenant}",
                tenant_id=tenant,
                spec=res.TenantSpec(default_region="eu-west-1"),
                queues=[
                    pb.QueueTemplate(queue_id=f"queue-{i}", spec=res.QueueSpec(capacity=i + 1))
                    for i in range(QUEUES)
                ],
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=20,
        )


async def test_outbox_leases_pass_on_within_their_bounds_and_a_woken_replica_writes_nothing(
    database_url: str, tmp_path: Path, canary_token: str
) -> None:
    data_dir = tmp_path / "data"
    gateway = await start_gateway("eu-west-1", public_verifier(data_dir / "keys"))
    sim = gateway.sim
    env = _env(database_url, data_dir, canary_token, gateway.address)
    db = Database(database_url, pool_size=2)
    planes = list(
        await asyncio.gather(
            *(start_plane_process(env, tmp_path / f"plane-{i}.log") for i in range(3))
        )
    )
    replicas = [_replica(plane) for plane in planes]
    taken: dict[str, float] = {}
    try:
        for number, (sig, index, _) in enumerate(ROUNDS):
            tenant = f"round-{number}"
            victim = planes[index]
            # The gateway acts at once and answers late: the victim's calls are in flight.
            sim.faults.slow_ack_seconds = 2.0
            await _provision(victim, canary_token, tenant)
            await eventually(
                lambda t=tenant: [c for c in sim.applied() if c.request["tenant_id"] == t],
                lambda calls: len(calls) == QUEUES,
            )
            sim.faults.slow_ack_seconds = 0.0
            leased = await eventually(
                lambda t=tenant: _commands(db, t),
                lambda rows: len(rows) == QUEUES and all(r[1] == "SENT" for r in rows),
            )
            owners = Counter(owner for _, _, owner, _ in leased)
            owner = owners.most_common(1)[0][0]
            victim = planes[replicas.index(owner)]
            mine = {key for key, _, o, _ in leased if o == owner}
            victim.process.send_signal(sig)
            signalled = time.monotonic()
            await eventually(
                lambda t=tenant: _commands(db, t),
                lambda rows, o=owner, m=mine: all(
                    a >= 2 and lease_owner != o for k, _, lease_owner, a in rows if k in m
                ),
                within=30,
                every=0.02,
            )
            taken[sig.name] = time.monotonic() - signalled
            await eventually(
                lambda t=tenant: _commands(db, t),
                lambda rows: all(r[1] == "ACKNOWLEDGED" for r in rows),
                within=30,
            )
            if sig == signal.SIGSTOP:
                before = _snapshot(db)
                fenced = len(victim.lines)
                victim.process.send_signal(signal.SIGCONT)
                await eventually(
                    lambda v=victim, f=fenced: "".join(v.lines[f:]),
                    lambda logged: '"dispatcher.write_fenced"' in logged,
                    within=20,
                )
                assert _snapshot(db) == before, "the woken replica changed nothing"
            elif sig == signal.SIGKILL:
                await victim.kill()
            else:
                await victim.stop()
        print("outbox takeover seconds:", {k: round(v, 2) for k, v in taken.items()})
        for sig, _, bound in ROUNDS:
            assert taken[sig.name] <= bound, f"{sig.name}: {taken[sig.name]:.2f} s > {bound} s"
    finally:
        for plane in planes:
            with contextlib.suppress(ProcessLookupError):
                plane.process.send_signal(signal.SIGCONT)
            await plane.stop()
        await gateway.stop()
    keys = {key for number in range(len(ROUNDS)) for key, *_ in _commands(db, f"round-{number}")}
    db.close()
    assert len(keys) == QUEUES * len(ROUNDS)
    applied = Counter(c.idempotency_key for c in sim.applied())
    assert set(applied) == keys
    assert set(applied.values()) == {1}, "the gateway acted on each command once"
    assert {c.idempotency_key for c in sim.calls} == keys, "every call under a command's key"
    assert {c.outcome for c in sim.calls} <= {"applied", "duplicate"}
    for plane in planes:
        assert scan_text("plane log", "".join(plane.lines), canary_token) == []
