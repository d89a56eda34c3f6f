"""Governance's singletons hand over between real plane processes, under load.

Three replicas run the reconciler (one lead) and the admin-job runner while
synced jobs keep arriving and a re-image rollout runs. Each round signals the
reconciler's leader and the job's runner (SIGTERM, SIGKILL, then SIGSTOP on
PostgreSQL) and measures how long until another replica has the lead (a new
generation) and the job (a new run): bounds 2 s, 5 s and 10 s. The frozen
replica, woken by SIGCONT, takes nothing back. In the end every synced job is
decided exactly once and every step of the rollout took effect once (a step
cut short is sent again at most once per round, as a replay of its key; none
after a clean stop). SQLite: one file shared by processes, SIGTERM and SIGKILL
(a frozen SQLite process keeps its file lock: SQLite deployments are one
process)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, create_engine, text

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from tests.governance.conftest import public_verifier
from tests.governance.node_double import NodeDouble, start_node_double
from tests.governance.processes import ExitedBeforeStart, PlaneProcess, start_plane_process
from tests.governance.sync_double import job_record, start_sync_double
from tests.support.polling import eventually
from tests.support.servers import plane_env

pytestmark = pytest.mark.slow

BOUNDS = {signal.SIGTERM: 2.0, signal.SIGKILL: 5.0, signal.SIGSTOP: 10.0}
REPLICAS = 3
NODES = 300
IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
LEAD = "governance-reconciler"


class Replicas:
    """Plane processes by their governance replica id (also the job runner's owner)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self._numbers = itertools.count()
        self.live: dict[str, PlaneProcess] = {}
        self.started: list[PlaneProcess] = []

    async def start(self) -> None:
        try:
            plane = await start_plane_process(self._env, self._next_log())
        except ExitedBeforeStart as exc:
            # Seen once in CI on SQLite: a replica started beside another ended
            # with no output at all (cause not found yet). What this test measures
            # is the hand-over between running replicas, so it says so and starts
            # the replacement again; a second such exit fails the test.
            print("replica exited before it started; starting it again:", exc)
            plane = await start_plane_process(self._env, self._next_log())
        self.started.append(plane)
        self.live[_replica_id(plane)] = plane

    def _next_log(self) -> Path:
        return self._logs / f"replica-{next(self._numbers)}.log"

    def logged_at(self, event: str, **match: object) -> float | None:
        """Wall-clock time of the first `event` line matching `match` on a live replica."""
        for plane in self.live.values():
            for line in plane.lines:
                if f'"{event}"' not in line:
                    continue
                fields = json.loads(line)
                if all(fields.get(k) == v for k, v in match.items()):
                    return dt.datetime.fromisoformat(fields["timestamp"]).timestamp()
        return None

    def count(self, event: str) -> int:
        """Log lines of `event` over every replica started."""
        return sum(f'"{event}"' in line for plane in self.started for line in plane.lines)

    async def stop_all(self) -> None:
        for plane in self.started:
            with contextlib.suppress(ProcessLookupError):
                plane.process.send_signal(signal.SIGCONT)
            await plane.stop()

    def by_pid(self, pid: int) -> str | None:
        return next((r for r, p in self.live.items() if p.process.pid == pid), None)


def _replica_id(plane: PlaneProcess) -> str:
    for line in plane.lines:
        if '"governance.started"' in line:
            return str(json.loads(line)["replica"])
    raise AssertionError("no governance.started line")


class Tables:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def row(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(sql), params).one_or_none()

    async def lead(self) -> tuple[int, int]:
        """(generation, pid) of the reconciler's lead."""
        row = await asyncio.to_thread(
            self.row, "SELECT generation, holder FROM leader_leases WHERE name = :n", n=LEAD
        )
        return (0, 0) if row is None else (int(row[0]), int(str(row[1]).rsplit(":", 1)[1]))

    async def job(self, job_id: str) -> tuple[int, str, str, int]:
        """(runs, lease owner, state, steps done) of the admin job."""
        row = await asyncio.to_thread(
            self.row,
            "SELECT runs, lease_owner, state, progress_done FROM admin_jobs "
            "WHERE admin_job_id = :j",
            j=job_id,
        )
        return int(row[0]), str(row[1]), str(row[2]), int(row[3])


async def _taken_over(
    replicas: Replicas, signalled: float, probe: Any, accept: Any, event: str, **match: Any
) -> float:
    """Seconds from `signalled` until a live replica logged taking over (`event`
    with `match`, completed by the value `probe()` gives once `accept` takes it):
    the replica's own clock, not this test's polling, times it."""
    value = await eventually(probe, accept, within=30, every=0.05)
    fields = {key: field(value) if callable(field) else field for key, field in match.items()}
    when = await eventually(lambda: replicas.logged_at(event, **fields), bool, within=10)
    assert when is not None
    return when - signalled


async def test_the_reconciler_lead_and_a_running_job_pass_on_within_their_bounds(
    database_url: str, backend: str, tmp_path: Path, canary_token: str
) -> None:
    signals = list(BOUNDS) if backend == "postgresql" else [signal.SIGTERM, signal.SIGKILL]
    data_dir = tmp_path / "data"
    verifier = public_verifier(data_dir / "keys")
    sync = await start_sync_double(verifier)
    nodes = NodeDouble([f"node-{i:04d}" for i in range(NODES)], "eu-west-1", IMAGE, 0.2)
    registry = await start_node_double(verifier, nodes)
    env = plane_env(token=canary_token, database_url=database_url, data_dir=data_dir)
    env |= {
        "PPOS_SERVICES": "governance",
        "PPOS_GOVERNANCE_BACKGROUND": "reconciler,admin-jobs",
        "PPOS_PEER_REGISTRYSYNC": sync.address,
        "PPOS_PEER_NODEREGISTRY": registry.address,
        "PPOS_GATEWAYS": "eu-west-1=127.0.0.1:9",
    }
    replicas = Replicas(env, tmp_path)
    tables = Tables(database_url)
    feeding: asyncio.Task[None] | None = None
    taken: dict[str, dict[str, float]] = {}
    try:
        await asyncio.gather(*(replicas.start() for _ in range(REPLICAS)))
        first = next(iter(replicas.live.values()))
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = gov_grpc.GovernanceServiceStub(channel)
            operator = (("authorization", f"Bearer {canary_token}"),)
            spec = res.GovernancePolicySpec(
                trigger_state=FRE,
                actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)],
                enabled=True,
            )
            await stub.SetGovernancePolicy(
                pb.SetGovernancePolicyRequest(policy_id="retry", spec=spec), metadata=operator
            )
            started = await stub.StartAdminJob(
                pb.StartAdminJobRequest(
                    kind=res.ADMIN_JOB_KIND_REIMAGE_ROLLOUT,
                    parameters={
                        "region": "eu-west-1",
                        "image": IMAGE,
                        "target_image": "registry.example/ppos/preflight-worker:7.5.0",
                        "target_digest": "sha256:" + "b" * 64,
                        "reason": "takeover test",
                    },
                ),
                metadata=operator,
            )
        job_id = started.job.admin_job_id

        async def feed() -> None:
            for number in itertools.count():
                sync.double.add(job_record(f"job_{number}", FRE))
                await asyncio.sleep(0.05)

        feeding = asyncio.create_task(feed())
        steps = 0
        for sig in signals:
            lead = await eventually(
                tables.lead, lambda v: replicas.by_pid(v[1]) is not None, within=30
            )
            # Running steps on a live replica (not in the middle of taking it up).
            job = await eventually(
                lambda: tables.job(job_id),
                lambda v, was=steps: v[1] in replicas.live and v[3] >= was + 3,
                within=30,
            )
            victims = {str(replicas.by_pid(lead[1])), job[1]}
            resent = nodes.resent()
            for victim in victims:
                replicas.live[victim].process.send_signal(sig)
            signalled = time.time()
            gone = {victim: replicas.live.pop(victim) for victim in victims}
            lead_took, job_took = await asyncio.gather(
                _taken_over(
                    replicas,
                    signalled,
                    tables.lead,
                    lambda v, was=lead: v[0] > was[0],
                    "leadership.taken",
                    name=LEAD,
                    generation=lambda v: v[0],
                ),
                _taken_over(
                    replicas,
                    signalled,
                    lambda: tables.job(job_id),
                    lambda v, was=job: v[0] > was[0] and v[1] in replicas.live,
                    "admin_jobs.running",
                    admin_job_id=job_id,
                    run=lambda v: v[0],
                ),
            )
            steps = (await tables.job(job_id))[3]
            taken[sig.name] = {"reconciler": round(lead_took, 2), "admin-job": round(job_took, 2)}
            if sig == signal.SIGSTOP:
                for plane in gone.values():
                    plane.process.send_signal(signal.SIGCONT)
                await asyncio.sleep(2)  # woken up, replaced: they take nothing back
                woken = {plane.process.pid for plane in gone.values()}
                assert (await tables.lead())[1] not in woken
                assert (await tables.job(job_id))[1] not in gone
                runner = gone[job[1]]
                assert any('"admin_jobs.lease_lost"' in line for line in runner.lines)
            if sig == signal.SIGTERM:
                assert nodes.resent() == resent, "a clean stop hands over at a step boundary"
            for plane in gone.values():
                await (plane.stop() if sig == signal.SIGTERM else plane.kill())
            await asyncio.gather(*(replicas.start() for _ in gone))
        feeding.cancel()
        nodes.step_seconds = 0  # let the rollout finish
        print(
            "takeover seconds:",
            taken,
            "steps sent again:",
            nodes.resent(),
            "fenced writes refused:",
            replicas.count("fence.refused"),
        )
        for sig in signals:
            for loop, took in taken[sig.name].items():
                assert took <= BOUNDS[sig], f"{loop} after {sig.name}: {took} s"
        await eventually(lambda: tables.job(job_id), lambda v: v[2] == "SUCCEEDED", within=60)
        assert len(nodes.commands) == NODES, "every node's step took effect once"
        assert nodes.resent() <= len(signals) - 1, "a step was sent again more than once a round"
        synced = len(sync.double.jobs)
        decided = await eventually(
            lambda: asyncio.to_thread(
                tables.row,
                "SELECT count(*), count(DISTINCT job_id) FROM governance_decisions",
            ),
            lambda row: row[0] == synced,
            within=60,
        )
        assert decided[1] == synced, "every synced job decided exactly once"
    finally:
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
        await replicas.stop_all()
        tables.engine.dispose()
        await sync.server.stop(0)
        await registry.server.stop(0)
