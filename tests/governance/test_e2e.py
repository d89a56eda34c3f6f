"""End to end: a synced FAILED_RUNTIME_ENVIRONMENT job, through the real registry sync,
the reconciler, the outbox and the real node registry, to the simulated gateway.

Everything is real: the control plane with its three services and interceptors,
the shipped registry and gateway simulator, a node enrolled and registered
like a node agent does, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.security.peers import gateway_audience, registry_audience
from ppos.controlplane.storage.database import Database
from ppos.preflight.v1 import job_pb2
from tests.governance.processes import start_plane_process
from tests.governance.support import Operator, eventually
from tests.governance.world import (
    REGION,
    Recorded,
    free_port,
    publish_keys,
    record_line,
    region_env,
    sha256,
    start_region,
    write_records,
)
from tests.support.canary import scan_files, scan_text
from tests.support.databases import runtime_url
from tests.support.nodes import DIGEST, IMAGE, enroll_node
from tests.support.servers import start_plane, stop_plane

FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
RETRY = "RetryJob"
# The read-only mirror the sync path writes (and nothing else may).
SYNCED_TABLES = ("synced_jobs", "sync_quarantine")


def synced_rows(runtime: Any) -> list[tuple[object, ...]]:
    """Every row of the mirror, as stored (to prove nothing else wrote it)."""

    def work(session: Session) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for table in SYNCED_TABLES:
            query = text(f"SELECT * FROM {table} ORDER BY 1")
            rows += [(table, *row) for row in session.execute(query).all()]
        return rows

    result: list[tuple[object, ...]] = runtime.db.read_sync(work)
    return result


async def test_a_synced_runtime_failure_reimages_its_node_and_is_retried_exactly_once(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    data_dir = tmp_path / "data"
    jwks = publish_keys(data_dir)
    port = free_port()
    plane = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=secret_registry,
        extra_env=region_env(port),
    )
    region = None
    try:
        node = await enroll_node(plane.channel, plane.operator, region=REGION)
        failed, payload = record_line(
            "job_1779116602472_1d246", "FAILED_RUNTIME_ENVIRONMENT", node.node_id
        )
        clean, _ = record_line("job_1779116602999_00aa1", "COMPLETED", node.node_id)
        records = write_records(tmp_path / "region.jsonl", [failed, clean])
        region = await start_region(port, jwks, records, tmp_path)
        recorded = Recorded(tmp_path)
        operator = Operator(plane.channel, plane.operator)
        await operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="env-recovery",
                spec=res.GovernancePolicySpec(
                    trigger_state=FRE,
                    actions=[
                        res.PolicyAction(kind=res.POLICY_ACTION_KIND_REIMAGE_NODE),
                        res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB),
                    ],
                    enabled=True,
                ),
            )
        )
        sync = rs_grpc.RegistrySyncServiceStub(plane.channel)
        sweep = (
            await sync.StartSweep(
                rs_pb.StartSweepRequest(regions=[REGION]), metadata=plane.operator
            )
        ).sweep
        done = await eventually(
            lambda: sync.GetSweep(
                rs_pb.GetSweepRequest(sweep_id=sweep.sweep_id), metadata=plane.operator
            ),
            lambda r: r.sweep.state == rs_pb.SWEEP_STATE_SUCCEEDED,
            within=60,
        )
        assert done.sweep.records_synced == 2
        after_sync = synced_rows(plane.runtime)
        # One decision, two commands, both acknowledged.
        [decision] = (
            await eventually(
                lambda: operator.ListDecisions(pb.ListDecisionsRequest()),
                lambda r: len(r.decisions) == 1,
            )
        ).decisions
        commands = (
            await eventually(
                lambda: operator.ListCommands(
                    pb.ListCommandsRequest(decision_id=decision.decision_id)
                ),
                lambda r: [c.state for c in r.commands] == [res.COMMAND_STATE_ACKNOWLEDGED] * 2,
                within=30,
            )
        ).commands
        assert decision.job.job_id == "job_1779116602472_1d246"
        assert decision.canonical_payload_sha256 == sha256(payload)
        by_method = {c.method.rsplit("/", 1)[-1]: c for c in commands}
        assert set(by_method) == {"ReimageNode", RETRY}
        # Exactly one retry request reached the gateway, for that revision, avoiding the node.
        [retry] = recorded.applied(RETRY)
        assert recorded.gateway_calls() == [retry], "nothing else was asked of the gateway"
        assert retry["request"]["job_id"] == "job_1779116602472_1d246"
        assert retry["request"]["failed_revision"] == "1"
        assert retry["request"]["avoid_node_id"] == node.node_id
        assert retry["idempotency_key"] == by_method[RETRY].idempotency_key
        # Exactly one re-image command in the node registry, to the node's pinned version.
        nodes = nr_grpc.NodeRegistryServiceStub(plane.channel)
        node_commands = (
            await nodes.ListNodeCommands(
                nr_pb.ListNodeCommandsRequest(node_id=node.node_id), metadata=plane.operator
            )
        ).commands
        assert len(node_commands) == 1
        [reimage] = node_commands
        assert reimage.kind == node_pb2.NODE_COMMAND_KIND_REIMAGE
        assert (reimage.reimage.target.image, reimage.reimage.target.digest) == (IMAGE, DIGEST)
        assert reimage.idempotency_key == by_method["ReimageNode"].idempotency_key
        assert reimage.command_id == by_method["ReimageNode"].receiver_command_id
        assert reimage.issued_by.name == "ppos.controlplane.governance"
        # Every call into the region carried one PREFLIGHT_JWT for the right audience.
        for call in recorded.metadata():
            keys = [k for k, _ in call["metadata"]]
            assert keys.count("authorization") == 1, call
            token = dict(call["metadata"])["authorization"].removeprefix("Bearer ")
            claims = jwt.decode(token, options={"verify_signature": False})
            service = call["method"].split("/")[1]
            expected = (
                gateway_audience(REGION)
                if service.endswith("PreflightGatewayService")
                else registry_audience(REGION)
            )
            assert claims["aud"] == expected, call["method"]
            assert claims["mth"] == call["method"]
        gateway_calls = [c for c in recorded.metadata() if "Gateway" in c["method"]]
        assert len(gateway_calls) == 1
        assert scan_text("region metadata", json.dumps(recorded.metadata()), canary_token) == []
        assert scan_text("gateway record", json.dumps(recorded.gateway_calls()), canary_token) == []
        # The synced record is untouched, byte for byte, and no one else wrote the sync tables.
        synced = (
            await sync.GetSyncedJob(
                rs_pb.GetSyncedJobRequest(
                    region=REGION, job_id="job_1779116602472_1d246", revision=1
                ),
                metadata=plane.operator,
            )
        ).job
        assert synced.record.canonical_payload == payload
        assert synced.record.canonical_payload_sha256 == sha256(payload)
        assert synced_rows(plane.runtime) == after_sync
    finally:
        if region is not None:
            await region.stop(0)
        await stop_plane(plane)
    assert scan_files(tmp_path, canary_token) == []


@pytest.mark.slow
async def test_a_killed_control_plane_delivers_every_decided_command_once_after_restart(
    database_url: str, tmp_path: Path, canary_token: str
) -> None:
    data_dir = tmp_path / "data"
    jwks = publish_keys(data_dir)
    port = free_port()
    env = {
        **region_env(port),
        "PPOS_CONTROL_TOKEN": canary_token,
        "PPOS_DATABASE_URL": runtime_url(database_url),  # the services' login
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_DB_POOL_SIZE": "4",
        "PPOS_SHUTDOWN_GRACE": "1s",
        "PPOS_OUTBOX_LEASE": "5s",
        "PPOS_OUTBOX_CALL_TIMEOUT": "4s",
    }
    operator_md = (("authorization", f"Bearer {canary_token}"),)
    first = await start_plane_process(env, tmp_path / "plane-1.log")
    second = None
    region = None
    db = Database(database_url, pool_size=2)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            nodes = [await enroll_node(channel, operator_md, region=REGION) for _ in range(3)]
            lines = [
                record_line(
                    f"job_17791166024{index}0_1d24{index}", "FAILED_RUNTIME_ENVIRONMENT", n.node_id
                )[0]
                for index, n in enumerate(nodes)
            ]
            records = write_records(tmp_path / "region.jsonl", lines)
            # The gateway acts at once and answers late: a kill now leaves retries done
            # at the gateway and unacknowledged in the outbox.
            region = await start_region(port, jwks, records, tmp_path, ["--gateway-slow-ack", "3"])
            await Operator(channel, operator_md).SetGovernancePolicy(
                pb.SetGovernancePolicyRequest(
                    policy_id="env-recovery",
                    spec=res.GovernancePolicySpec(
                        trigger_state=FRE,
                        actions=[
                            res.PolicyAction(kind=res.POLICY_ACTION_KIND_REIMAGE_NODE),
                            res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB),
                        ],
                        enabled=True,
                    ),
                )
            )
            await rs_grpc.RegistrySyncServiceStub(channel).StartSweep(
                rs_pb.StartSweepRequest(regions=[REGION]), metadata=operator_md
            )
        recorded = Recorded(tmp_path)
        await eventually(lambda: len(recorded.applied(RETRY)), lambda n: n >= 1, within=60)
        await first.kill()
        in_flight = len(recorded.applied(RETRY))
        second = await start_plane_process(env, tmp_path / "plane-2.log")

        def states() -> list[str]:
            return db.read_sync(
                lambda s: [r[0] for r in s.execute(text("SELECT state FROM outbox_commands"))]
            )

        await eventually(states, lambda s: s == ["ACKNOWLEDGED"] * 6, within=90)
        async with grpc.aio.insecure_channel(second.address) as channel:
            decisions = (
                await Operator(channel, operator_md).ListDecisions(pb.ListDecisionsRequest())
            ).decisions
            assert len(decisions) == 3, "one decision per synced failure, restart or not"
            stub = nr_grpc.NodeRegistryServiceStub(channel)
            for node in nodes:
                reply = await stub.ListNodeCommands(
                    nr_pb.ListNodeCommandsRequest(node_id=node.node_id), metadata=operator_md
                )
                assert len(reply.commands) == 1, "one re-image per node"
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        if region is not None:
            await region.stop(0)
        db.close()
    applied = Counter(c["idempotency_key"] for c in recorded.applied(RETRY))
    assert len(applied) == 3
    assert set(applied.values()) == {1}, "each retry acted on once at the gateway"
    duplicates = [c for c in recorded.gateway_calls(RETRY) if c["outcome"] == "duplicate"]
    assert len(duplicates) >= in_flight >= 1, "retries cut off by the kill were recognised"
    for process in (first, second):
        assert process is not None
        assert scan_text("plane log", "".join(process.lines), canary_token) == []
    assert scan_files(tmp_path, canary_token) == []
