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
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE
from ppos.controlplane.services.governance.policy.evaluation import JobView

SERVICE = "governance"


class PeerStubs:
    """The one way governance reaches its peer services: a stub over the peer
    directory's channel (each call carries a PREFLIGHT_JWT minted for the peer),
    called with `deadline`. A peer without an address raises ConfigError."""

    def __init__(self, deps: GovernanceDeps) -> None:
        self._directory = deps.peers
        self.deadline = float(deps.peer_call_timeout)

    def channel(self, peer: str) -> grpc.aio.Channel:
        return self._directory.channel(peer, caller=SERVICE)

    def node_registry(self) -> nr_grpc.NodeRegistryServiceAsyncStub:
        return nr_grpc.NodeRegistryServiceStub(self.channel("noderegistry"))

    def registry_sync(self) -> rs_grpc.RegistrySyncServiceAsyncStub:
        return rs_grpc.RegistrySyncServiceStub(self.channel("registrysync"))


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

    def __init__(self, stubs: PeerStubs) -> None:
        self._stubs = stubs

    async def page(self, after: int, states: list[str], page_size: int) -> SyncedPage:
        reply = await self._stubs.registry_sync().ListSyncedJobs(
            rs_pb.ListSyncedJobsRequest(
                governance_states=[GOVERNANCE_STATE.to_proto(s) for s in states],
                after_sync_sequence=after,
                page_size=page_size,
                omit_payload=True,
            ),
            timeout=self._stubs.deadline,
        )
        return SyncedPage(
            [job_view(j) for j in reply.jobs], reply.last_sync_sequence, reply.has_more
        )

    async def get(self, region: str, job_id: str, revision: int) -> JobView:
        reply = await self._stubs.registry_sync().GetSyncedJob(
            rs_pb.GetSyncedJobRequest(region=region, job_id=job_id, revision=revision),
            timeout=self._stubs.deadline,
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

    def __init__(self, stubs: PeerStubs) -> None:
        self._stubs = stubs

    async def facts(self, node_id: str) -> NodeFacts:
        """NOT_FOUND means unknown; other errors propagate (the caller holds its work)."""
        if not node_id:
            return NodeFacts(known=None)
        try:
            reply = await self._stubs.node_registry().GetNode(
                nr_pb.GetNodeRequest(node_id=node_id), timeout=self._stubs.deadline
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return NodeFacts(known=False)
            raise
        container = reply.node.status.container
        return NodeFacts(known=True, image=container.image, digest=container.digest)
