"""NodeRegistryService: the operator's calls, and a node agent's own calls."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from google.protobuf import duration_pb2

from ppos.controlplane.client.connection import Connection, Stream, new_request_id
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

SERVICE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def node_filter(
    *,
    region: str = "",
    cluster: str = "",
    readiness: Iterable[node_pb2.Readiness.ValueType] = (),
    container_image: str = "",
    label_selector: str = "",
) -> node_pb2.NodeFilter:
    return node_pb2.NodeFilter(
        region=region,
        cluster=cluster,
        readiness=list(readiness),
        container_image=container_image,
        label_selector=label_selector,
    )


class NodeRegistryClient:
    """Nodes, their container versions and the commands sent to them."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._stub = pb_grpc.NodeRegistryServiceStub(connection.channel)

    def create_enrollment(
        self,
        region: str,
        *,
        cluster: str = "",
        labels: Mapping[str, str] | None = None,
        ttl_seconds: float | None = None,
        request_id: str | None = None,
    ) -> pb.CreateEnrollmentResponse:
        """Approve one node's enrollment; the response holds its one-time token."""
        request = pb.CreateEnrollmentRequest(
            region=region,
            cluster=cluster,
            labels=dict(labels or {}),
            request_id=request_id or new_request_id("enr"),  # makes retries safe
        )
        if ttl_seconds is not None:
            request.ttl.CopyFrom(duration(ttl_seconds))
        return self._conn.unary(self._stub.CreateEnrollment, request, name="CreateEnrollment")

    def list_enrollments(
        self,
        *,
        region: str = "",
        states: Iterable[pb.EnrollmentState.ValueType] = (),
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListEnrollmentsResponse:
        """Enrollments newest first, without their tokens, all pages merged (at most
        `limit` when given)."""
        merged = pb.ListEnrollmentsResponse()
        token = ""
        while True:
            request = pb.ListEnrollmentsRequest(
                region=region, states=list(states), page_size=page_size, page_token=token
            )
            page = self._conn.unary(self._stub.ListEnrollments, request, name="ListEnrollments")
            merged.enrollments.extend(page.enrollments)
            token = page.next_page_token
            if not token or (limit and len(merged.enrollments) >= limit):
                if limit:
                    del merged.enrollments[limit:]
                return merged

    def revoke_enrollment(self, enrollment_id: str, *, reason: str) -> pb.Enrollment:
        """Withdraw an enrollment no node has redeemed (again: no change)."""
        request = pb.RevokeEnrollmentRequest(enrollment_id=enrollment_id, reason=reason)
        return self._conn.unary(
            self._stub.RevokeEnrollment, request, name="RevokeEnrollment"
        ).enrollment

    def get_node(self, node_id: str) -> node_pb2.Node:
        request = pb.GetNodeRequest(node_id=node_id)
        return self._conn.unary(self._stub.GetNode, request, name="GetNode").node

    def list_nodes_page(
        self,
        node_filter: node_pb2.NodeFilter | None = None,
        *,
        page_size: int = 0,
        page_token: str = "",
        order_by: pb.NodeOrder.ValueType = pb.NODE_ORDER_UNSPECIFIED,
        descending: bool = False,
    ) -> pb.ListNodesResponse:
        """One page; a page token goes with the filter, order and direction it came from."""
        request = pb.ListNodesRequest(
            filter=node_filter,
            page_size=page_size,
            page_token=page_token,
            order_by=order_by,
            descending=descending,
        )
        return self._conn.unary(self._stub.ListNodes, request, name="ListNodes")

    def list_nodes(
        self,
        node_filter: node_pb2.NodeFilter | None = None,
        *,
        page_size: int = 0,
        limit: int = 0,
        order_by: pb.NodeOrder.ValueType = pb.NODE_ORDER_UNSPECIFIED,
        descending: bool = False,
    ) -> pb.ListNodesResponse:
        """Every matching node in the order asked, all pages merged (at most `limit` when
        given; the resource version of the first page)."""
        merged = pb.ListNodesResponse()
        token = ""
        first = True
        while True:
            page = self.list_nodes_page(
                node_filter,
                page_size=page_size,
                page_token=token,
                order_by=order_by,
                descending=descending,
            )
            merged.nodes.extend(page.nodes)
            if first:
                merged.resource_version = page.resource_version
                first = False
            token = page.next_page_token
            if not token or (limit and len(merged.nodes) >= limit):
                if limit:
                    del merged.nodes[limit:]
                return merged

    def version_rollup(self, region: str = "") -> list[node_pb2.VersionCount]:
        request = pb.GetVersionRollupRequest(region=region)
        reply = self._conn.unary(self._stub.GetVersionRollup, request, name="GetVersionRollup")
        return list(reply.versions)

    def cordon(
        self, node_id: str, *, reason: str, expected_resource_version: str = ""
    ) -> node_pb2.Node:
        request = pb.CordonNodeRequest(
            node_id=node_id, reason=reason, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.CordonNode, request, name="CordonNode").node

    def uncordon(self, node_id: str, *, expected_resource_version: str = "") -> node_pb2.Node:
        request = pb.UncordonNodeRequest(
            node_id=node_id, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.UncordonNode, request, name="UncordonNode").node

    def drain(
        self,
        node_id: str,
        *,
        reason: str,
        grace_seconds: float | None = None,
        expected_resource_version: str = "",
    ) -> node_pb2.Node:
        request = pb.DrainNodeRequest(
            node_id=node_id, reason=reason, expected_resource_version=expected_resource_version
        )
        if grace_seconds is not None:
            request.grace.CopyFrom(duration(grace_seconds))
        return self._conn.unary(self._stub.DrainNode, request, name="DrainNode").node

    def reimage(
        self,
        node_id: str,
        *,
        image: str,
        digest: str,
        reason: str,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> pb.ReimageNodeResponse:
        """Issue a re-image; repeating the idempotency key returns the first command."""
        request = pb.ReimageNodeRequest(
            node_id=node_id,
            target=node_pb2.ContainerVersion(image=image, digest=digest),
            reason=reason,
            idempotency_key=idempotency_key or new_request_id("reimage"),
        )
        if timeout_seconds is not None:
            request.timeout.CopyFrom(duration(timeout_seconds))
        return self._conn.unary(self._stub.ReimageNode, request, name="ReimageNode")

    def get_command(self, command_id: str) -> node_pb2.NodeCommand:
        request = pb.GetNodeCommandRequest(command_id=command_id)
        return self._conn.unary(self._stub.GetNodeCommand, request, name="GetNodeCommand").command

    def list_commands(
        self,
        *,
        node_id: str = "",
        states: Iterable[node_pb2.NodeCommandState.ValueType] = (),
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListNodeCommandsResponse:
        """Commands newest first, all pages merged (at most `limit` when given)."""
        merged = pb.ListNodeCommandsResponse()
        token = ""
        while True:
            request = pb.ListNodeCommandsRequest(
                node_id=node_id, states=list(states), page_size=page_size, page_token=token
            )
            page = self._conn.unary(self._stub.ListNodeCommands, request, name="ListNodeCommands")
            merged.commands.extend(page.commands)
            token = page.next_page_token
            if not token or (limit and len(merged.commands) >= limit):
                if limit:
                    del merged.commands[limit:]
                return merged

    def cancel_command(self, command_id: str, *, reason: str) -> node_pb2.NodeCommand:
        request = pb.CancelNodeCommandRequest(command_id=command_id, reason=reason)
        return self._conn.unary(
            self._stub.CancelNodeCommand, request, name="CancelNodeCommand"
        ).command

    def run_health_sweep(self) -> pb.RunHealthSweepResponse:
        request = pb.RunHealthSweepRequest()
        return self._conn.unary(self._stub.RunHealthSweep, request, name="RunHealthSweep")

    def watch_nodes(
        self,
        node_filter: node_pb2.NodeFilter | None = None,
        *,
        resume_from_version: int = 0,
        bookmark_interval_seconds: float | None = None,
    ) -> Stream[pb.WatchNodesResponse]:
        """A snapshot then every change; cancel the stream to stop watching."""
        request = pb.WatchNodesRequest(filter=node_filter, resume_from_version=resume_from_version)
        if bookmark_interval_seconds is not None:
            request.bookmark_interval.CopyFrom(duration(bookmark_interval_seconds))
        return self._conn.stream(self._stub.WatchNodes, request, name="WatchNodes")

    def watch_events(
        self, node_filter: node_pb2.NodeFilter | None = None, *, resume_from_version: int = 0
    ) -> Iterator[pb.WatchEvent]:
        """The events of `watch_nodes`, one at a time."""
        with self.watch_nodes(node_filter, resume_from_version=resume_from_version) as stream:
            for message in stream:
                yield from message.events


class NodeAgentClient:
    """A worker node's own calls, authenticated with its node credential (never the
    control token). Used by node agents, the demo and the tests."""

    def __init__(self, connection: Connection, credential: str = "") -> None:
        self._conn = connection
        self._stub = pb_grpc.NodeRegistryServiceStub(connection.channel)
        self.credential = credential
        self.node_id = ""

    def enroll(self, enrollment_token: str, *, hostname: str = "") -> pb.EnrollNodeResponse:
        request = pb.EnrollNodeRequest(hostname=hostname)
        reply = self._conn.unary(
            self._stub.EnrollNode, request, name="EnrollNode", bearer=enrollment_token, retry=False
        )
        self.credential, self.node_id = reply.node_credential, reply.node_id
        return reply

    def renew_credential(self) -> pb.RenewNodeCredentialResponse:
        """A fresh node credential; the one used for this call stops working at once."""
        request = pb.RenewNodeCredentialRequest()
        reply = self._conn.unary(
            self._stub.RenewNodeCredential,
            request,
            name="RenewNodeCredential",
            bearer=self.credential,
            retry=False,  # a lost answer would leave us with a revoked credential either way
        )
        self.credential = reply.node_credential
        return reply

    def register(
        self,
        *,
        region: str,
        image: str,
        digest: str = "",
        cluster: str = "",
        capacity_slots: int = 4,
        labels: Mapping[str, str] | None = None,
    ) -> pb.RegisterNodeResponse:
        request = pb.RegisterNodeRequest(
            region=region,
            cluster=cluster,
            container=node_pb2.ContainerVersion(image=image, digest=digest),
            capacity_slots=capacity_slots,
            labels=dict(labels or {}),
        )
        return self._conn.unary(
            self._stub.RegisterNode, request, name="RegisterNode", bearer=self.credential
        )

    def heartbeat(
        self,
        *,
        ready: bool = True,
        not_ready_reason: str = "",
        image: str = "",
        digest: str = "",
        slots_in_use: int = 0,
    ) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(
            ready=ready,
            not_ready_reason=not_ready_reason,
            container=node_pb2.ContainerVersion(image=image, digest=digest),
            slots_in_use=slots_in_use,
        )
        return self._conn.unary(
            self._stub.Heartbeat, request, name="Heartbeat", bearer=self.credential
        )

    def report_command(
        self, command_id: str, state: node_pb2.NodeCommandState.ValueType, message: str = ""
    ) -> node_pb2.NodeCommand:
        request = pb.ReportNodeCommandRequest(command_id=command_id, state=state, message=message)
        return self._conn.unary(
            self._stub.ReportNodeCommand, request, name="ReportNodeCommand", bearer=self.credential
        ).command
