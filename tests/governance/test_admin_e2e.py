"""Admin jobs of every kind against the real node registry and registry sync."""

from __future__ import annotations

import json
from pathlib import Path

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from tests.governance.support import Operator, eventually
from tests.governance.world import (
    REGION,
    free_port,
    publish_keys,
    record_line,
    region_env,
    start_region,
    write_records,
)
from tests.support.nodes import IMAGE, enroll_node
from tests.support.servers import start_plane, stop_plane

TARGET = "registry.example/ppos/preflight-worker:7.5.0"
TARGET_DIGEST = "sha256:" + "ef" * 32
ENDED = (res.ADMIN_JOB_STATE_SUCCEEDED, res.ADMIN_JOB_STATE_FAILED, res.ADMIN_JOB_STATE_CANCELLED)


async def _run(operator: Operator, kind: int, **parameters: str) -> res.AdminJob:
    job = (
        await operator.StartAdminJob(pb.StartAdminJobRequest(kind=kind, parameters=parameters))
    ).job
    ended = await eventually(
        lambda: operator.GetAdminJob(pb.GetAdminJobRequest(admin_job_id=job.admin_job_id)),
        lambda r: r.job.state in ENDED,
        within=60,
    )
    return ended.job


async def test_every_admin_job_kind_against_the_real_services(
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
        operator = Operator(plane.channel, plane.operator)
        eu = [await enroll_node(plane.channel, plane.operator, region=REGION) for _ in range(3)]
        us = [
            await enroll_node(plane.channel, plane.operator, region="us-east-1") for _ in range(2)
        ]
        lines = [record_line(f"job_100{i}", "COMPLETED", eu[0].node_id)[0] for i in range(4)]
        region = await start_region(
            port, jwks, write_records(tmp_path / "r.jsonl", lines), tmp_path
        )

        swept = await _run(operator, res.ADMIN_JOB_KIND_HEALTH_SWEEP)
        assert swept.state == res.ADMIN_JOB_STATE_SUCCEEDED, swept.error
        assert set(json.loads(swept.result_json)) == {
            "marked_not_ready",
            "marked_lost",
            "commands_timed_out",
        }

        synced = await _run(operator, res.ADMIN_JOB_KIND_SYNC_SWEEP, regions=REGION)
        assert synced.state == res.ADMIN_JOB_STATE_SUCCEEDED, synced.error
        result = json.loads(synced.result_json)
        assert (result["state"], result["records_synced"]) == ("SWEEP_STATE_SUCCEEDED", 4)

        rollout = await _run(
            operator,
            res.ADMIN_JOB_KIND_REIMAGE_ROLLOUT,
            region=REGION,
            image=IMAGE,
            target_image=TARGET,
            target_digest=TARGET_DIGEST,
            reason="worker 7.5.0 fixes the font cache crash",
        )
        assert rollout.state == res.ADMIN_JOB_STATE_SUCCEEDED, rollout.error
        assert (rollout.progress.done, rollout.progress.total) == (3, 3)
        nodes = nr_grpc.NodeRegistryServiceStub(plane.channel)
        for node in eu:
            [command] = (
                await nodes.ListNodeCommands(
                    nr_pb.ListNodeCommandsRequest(node_id=node.node_id), metadata=plane.operator
                )
            ).commands
            assert command.kind == node_pb2.NODE_COMMAND_KIND_REIMAGE
            assert command.reimage.target.digest == TARGET_DIGEST
            assert command.idempotency_key == f"{rollout.admin_job_id}:{node.node_id}"
        for node in us:
            assert not (
                await nodes.ListNodeCommands(
                    nr_pb.ListNodeCommandsRequest(node_id=node.node_id), metadata=plane.operator
                )
            ).commands, "other regions are left alone"

        drained = await _run(
            operator, res.ADMIN_JOB_KIND_REGION_DRAIN, region="us-east-1", reason="decommission"
        )
        assert drained.state == res.ADMIN_JOB_STATE_SUCCEEDED, drained.error
        assert json.loads(drained.result_json)["done"] == 2
        for node in us:
            got = (
                await nodes.GetNode(
                    nr_pb.GetNodeRequest(node_id=node.node_id), metadata=plane.operator
                )
            ).node
            assert got.status.readiness == node_pb2.READINESS_DRAINING
            assert not got.spec.schedulable
        # Draining again: nodes already draining are skipped and listed, not fatal.
        again = await _run(
            operator, res.ADMIN_JOB_KIND_REGION_DRAIN, region="us-east-1", reason="once more"
        )
        assert again.state == res.ADMIN_JOB_STATE_SUCCEEDED
        skipped = json.loads(again.result_json)["skipped"]
        assert sorted(s["node_id"] for s in skipped) == sorted(n.node_id for n in us)
    finally:
        if region is not None:
            await region.stop(0)
        await stop_plane(plane)
