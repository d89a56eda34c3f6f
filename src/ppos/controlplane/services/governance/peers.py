"""What governance reads from its peers, over their contracts only.

Synced jobs come from RegistrySyncService (never from the sync tables);
node facts from NodeRegistryService. Every call carries a PREFLIGHT_JWT minted
for the peer and the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ppos.controlplane.core.timeutil import from_timestamp
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.runtime.modules import Runtime
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE
from ppos.controlplane.services.governance.policy.evaluation import JobView

SERVICE = "governance"


def job_view(synced: rs_pb.SyncedJob) -> JobView:
    record = synced.record
    when = record.update_time if record.HasField("update_time") else synced.sync_time
    state = (
        GOVERNANCE_STATE.to_name(record.governance_state)
        if GOVERNANCE_STATE.is_known(record.governance_state)
        else "UNSPECIFIED"
    )
    return JobView(
        region=record.region,
        job_id=record.job_id,
        revision=record.revision,
        tenant_id=record.tenant_id,
        queue_id=record.queue_id,
        node_id=record.node_id,
        container_image=record.container_image,
        governance_state=state,
        payload_sha256=bytes(record.canonical_payload_sha256),
        sync_sequence=synced.sync_sequence,
        record_time_epoch=from_timestamp(when).timestamp(),
    )


@dataclass(frozen=True)
class SyncedPage:
    jobs: list[JobView]
    last_sync_sequence: int
    has_more: bool


class SyncedJobs:
    """Reads synced jobs through RegistrySyncService."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _stub(self) -> rs_grpc.RegistrySyncServiceAsyncStub:
        return rs_grpc.RegistrySyncServiceStub(
            self._rt.peers.channel("registrysync", caller=SERVICE)
        )

    @property
    def _deadline(self) -> float:
        return float(self._rt.settings.peers.peer_call_timeout)

    async def page(self, after: int, states: list[str], page_size: int) -> SyncedPage:
        reply = await self._stub().ListSyncedJobs(
            rs_pb.ListSyncedJobsRequest(
                governance_states=[GOVERNANCE_STATE.to_proto(s) for s in states],
                after_sync_sequence=after,
                page_size=page_size,
                omit_payload=True,
            ),
            timeout=self._deadline,
        )
        return SyncedPage(
            [job_view(j) for j in reply.jobs], reply.last_sync_sequence, reply.has_more
        )

    async def get(self, region: str, job_id: str, revision: int) -> JobView:
        reply = await self._stub().GetSyncedJob(
            rs_pb.GetSyncedJobRequest(region=region, job_id=job_id, revision=revision),
            timeout=self._deadline,
        )
        return job_view(reply.job)


@dataclass(frozen=True)
class NodeFacts:
    """What the node registry says about a node: known or not, and its container."""

    known: bool | None
    image: str = ""
    digest: str = ""


class Nodes:
    """Reads node facts through NodeRegistryService."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def facts(self, node_id: str) -> NodeFacts:
        """NOT_FOUND means unknown; other errors propagate (the caller holds its work)."""
        if not node_id:
            return NodeFacts(known=None)
        stub = nr_grpc.NodeRegistryServiceStub(
            self._rt.peers.channel("noderegistry", caller=SERVICE)
        )
        try:
            reply = await stub.GetNode(
                nr_pb.GetNodeRequest(node_id=node_id),
                timeout=float(self._rt.settings.peers.peer_call_timeout),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return NodeFacts(known=False)
            raise
        container = reply.node.status.container
        return NodeFacts(known=True, image=container.image, digest=container.digest)
