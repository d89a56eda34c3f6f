"""Hostile field values are refused by every RPC with the field's path, changing nothing.

For each RPC of the three services, each field that takes an identifier, free
text, a number written as text, a repeated filter or a map gets the values of
`hostile_fields.variants` (NUL, ANSI escapes, CRLF, zero-width and bidi
characters, over-long values, "²" and "١٢", 70,000 values...) against a real
server on SQLite and on PostgreSQL. Every one must answer INVALID_ARGUMENT
with a BadRequest violation naming the field, never INTERNAL; afterwards
every table holds what it held before. The rest of each request is valid and
names things that exist, so without the check most calls would succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import MetaData, create_engine, select

from ppos.controlplane.common.v1 import resource_pb2 as common
from ppos.controlplane.core.validation import MAX_REGIONS
from ppos.controlplane.governance.v1 import governance_service_pb2 as gpb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gpb_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as npb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as npb_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rpb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rpb_grpc
from ppos.controlplane.security.access import DEFAULT_MAX_REQUEST_BYTES
from ppos.preflight.v1 import job_pb2
from tests.node_registry.helpers import refusal
from tests.security.hostile_fields import (
    AUDIT_ID,
    CLUSTER,
    HOST,
    IMAGE,
    KIND,
    LABELS,
    MESSAGE,
    NAME,
    NUMBER,
    OBJECT,
    REASON,
    REGION,
    REPEATED_ENUM,
    REPEATED_MESSAGE,
    REPEATED_REGION,
    RESOURCE,
    SELECTOR,
    SHA256,
    VERSION,
    Field,
    Variant,
    put,
    text,
    variants,
)
from tests.support.nodes import DIGEST, EnrolledNode, enroll_node
from tests.support.servers import RunningPlane

DEGRADED = job_pb2.GOVERNANCE_STATE_DEGRADED


@dataclass
class World:
    """What exists before the hostile calls: a tenant, a partner, a registered node."""

    node: EnrolledNode
    enrollment_token: str
    node_command_id: str
    enrollment_id: str


def _tenant_spec() -> res.TenantSpec:
    return res.TenantSpec(display_name="New Co", default_region="eu-west-1")


def _route(tenant_id: str = "acme") -> res.PartnerRouteSpec:
    return res.PartnerRouteSpec(
        tenant_id=tenant_id,
        partner_id="shop-a",
        condition=res.RouteCondition(governance_states=[DEGRADED], source_region="eu-west-1"),
    )


def _provision(w: World) -> Message:
    return gpb.ProvisionTenantRequest(
        request_id="req-1",
        tenant_id="newco",
        spec=_tenant_spec(),
        queues=[
            gpb.QueueTemplate(
                queue_id="queue-1",
                spec=res.QueueSpec(region="eu-west-1", capacity=10, reason="new"),
            )
        ],
        routes=[
            res.PartnerRouteSpec(
                tenant_id="newco",
                queue_id="queue-1",
                partner_id="shop-a",
                fallback_partner_id="shop-b",
                condition=res.RouteCondition(
                    governance_states=[DEGRADED], source_region="eu-west-1"
                ),
            )
        ],
        labels={"tier": "gold"},
    )


def _policy_spec(kind: int, **parameters: str) -> res.GovernancePolicySpec:
    return res.GovernancePolicySpec(
        tenant_id="acme",
        trigger_state=DEGRADED,
        actions=[res.PolicyAction(kind=kind, parameters=parameters)],
        enabled=True,
    )


def _lower(**parameters: str) -> res.GovernancePolicySpec:
    return _policy_spec(
        res.POLICY_ACTION_KIND_LOWER_QUEUE_CAPACITY, capacity_factor="0.5", **parameters
    )


def _reimage(**parameters: str) -> res.GovernancePolicySpec:
    spec = _policy_spec(res.POLICY_ACTION_KIND_REIMAGE_NODE, image="w:1", digest=DIGEST)
    spec.actions[0].parameters.update(parameters)
    return spec


def _drain_job(**parameters: str) -> Message:
    return gpb.StartAdminJobRequest(
        kind=res.ADMIN_JOB_KIND_REGION_DRAIN,
        parameters={"region": "eu-west-1", "reason": "maintenance", **parameters},
    )


def _rollout_job() -> Message:
    return gpb.StartAdminJobRequest(
        kind=res.ADMIN_JOB_KIND_REIMAGE_ROLLOUT,
        parameters={
            "region": "eu-west-1",
            "image": "registry.example/w:1",
            "target_image": "registry.example/w:2",
            "target_digest": DIGEST,
            "reason": "upgrade",
        },
    )


def _node_filter() -> node_pb2.NodeFilter:
    return node_pb2.NodeFilter(
        region="eu-west-1",
        cluster="c1",
        readiness=[node_pb2.READINESS_READY],
        container_image="registry.example/w:1",
        label_selector="tier=gold",
    )


def _register(w: World) -> Message:
    return npb.RegisterNodeRequest(
        node_id=w.node.node_id,
        region="eu-west-1",
        cluster="c1",
        container=node_pb2.ContainerVersion(image="registry.example/w:2", digest=DIGEST),
        capacity_slots=4,
        labels={"tier": "gold"},
    )


def _heartbeat(w: World) -> Message:
    return npb.HeartbeatRequest(
        node_id=w.node.node_id,
        ready=False,
        not_ready_reason="DiskPressure",
        container=node_pb2.ContainerVersion(image="registry.example/w:2", digest=DIGEST),
    )


G, N, S = "governance", "noderegistry", "registrysync"

FIELDS: list[Field] = [
    # -- governance: tenants and queues ----------------------------------------------
    Field(f"{G}/ProvisionTenant", "request_id", OBJECT, _provision),
    Field(f"{G}/ProvisionTenant", "tenant_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "spec.display_name", NAME, _provision),
    Field(f"{G}/ProvisionTenant", "spec.default_region", REGION, _provision),
    Field(f"{G}/ProvisionTenant", "spec.default_partner_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "queues", REPEATED_MESSAGE, _provision),
    Field(f"{G}/ProvisionTenant", "queues[0].queue_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "queues[0].spec.region", REGION, _provision),
    Field(f"{G}/ProvisionTenant", "queues[0].spec.reason", REASON, _provision),
    Field(f"{G}/ProvisionTenant", "routes", REPEATED_MESSAGE, _provision),
    Field(f"{G}/ProvisionTenant", "routes[0].tenant_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "routes[0].queue_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "routes[0].partner_id", RESOURCE, _provision),
    Field(f"{G}/ProvisionTenant", "routes[0].fallback_partner_id", RESOURCE, _provision),
    Field(
        f"{G}/ProvisionTenant", "routes[0].condition.governance_states", REPEATED_ENUM, _provision
    ),
    Field(f"{G}/ProvisionTenant", "routes[0].condition.source_region", REGION, _provision),
    Field(f"{G}/ProvisionTenant", "labels", LABELS, _provision),
    Field(f"{G}/GetTenant", "tenant_id", RESOURCE, lambda w: gpb.GetTenantRequest(tenant_id="x")),
    Field(f"{G}/ListTenants", "phases", REPEATED_ENUM, lambda w: gpb.ListTenantsRequest()),
    Field(f"{G}/ListTenants", "label_selector", SELECTOR, lambda w: gpb.ListTenantsRequest()),
    *(
        Field(
            f"{G}/UpdateTenant",
            path,
            kind,
            lambda w: gpb.UpdateTenantRequest(
                tenant_id="acme", spec=_tenant_spec(), expected_resource_version="1"
            ),
        )
        for path, kind in (
            ("tenant_id", RESOURCE),
            ("spec.display_name", NAME),
            ("spec.default_region", REGION),
            ("spec.default_partner_id", RESOURCE),
            ("expected_resource_version", VERSION),
            ("expected_resource_version", NUMBER),
        )
    ),
    *(
        Field(
            f"{G}/{verb}Tenant",
            path,
            kind,
            lambda w, r=request: r(tenant_id="acme", reason="why", expected_resource_version="1"),
        )
        for verb, request in (
            ("Suspend", gpb.SuspendTenantRequest),
            ("Retire", gpb.RetireTenantRequest),
        )
        for path, kind in (
            ("tenant_id", RESOURCE),
            ("reason", REASON),
            ("expected_resource_version", NUMBER),
        )
    ),
    Field(f"{G}/ResumeTenant", "tenant_id", RESOURCE, lambda w: gpb.ResumeTenantRequest()),
    Field(
        f"{G}/ResumeTenant",
        "expected_resource_version",
        NUMBER,
        lambda w: gpb.ResumeTenantRequest(tenant_id="acme"),
    ),
    *(
        Field(
            f"{G}/CreateQueue",
            path,
            kind,
            lambda w: gpb.CreateQueueRequest(
                tenant_id="acme",
                queue_id="queue-2",
                request_id="req-queue-2",
                spec=res.QueueSpec(region="eu-west-1", capacity=5, reason="new"),
            ),
        )
        for path, kind in (
            ("tenant_id", RESOURCE),
            ("queue_id", RESOURCE),
            ("request_id", OBJECT),
            ("spec.region", REGION),
            ("spec.reason", REASON),
        )
    ),
    Field(
        f"{G}/GetQueue", "tenant_id", RESOURCE, lambda w: gpb.GetQueueRequest(queue_id="queue-1")
    ),
    Field(f"{G}/GetQueue", "queue_id", RESOURCE, lambda w: gpb.GetQueueRequest(tenant_id="acme")),
    Field(f"{G}/ListQueues", "tenant_id", RESOURCE, lambda w: gpb.ListQueuesRequest()),
    Field(f"{G}/ListQueues", "region", REGION, lambda w: gpb.ListQueuesRequest()),
    Field(f"{G}/ListQueues", "states", REPEATED_ENUM, lambda w: gpb.ListQueuesRequest()),
    *(
        Field(
            f"{G}/{verb}Queue",
            path,
            kind,
            lambda w, r=request: r(
                tenant_id="acme",
                queue_id="queue-1",
                reason="why",
                expected_resource_version="1",
                **({"capacity": 3} if r is gpb.ResizeQueueRequest else {}),
            ),
        )
        for verb, request in (
            ("Resize", gpb.ResizeQueueRequest),
            ("Pause", gpb.PauseQueueRequest),
            ("Drain", gpb.DrainQueueRequest),
        )
        for path, kind in (
            ("tenant_id", RESOURCE),
            ("queue_id", RESOURCE),
            ("reason", REASON),
            ("expected_resource_version", NUMBER),
        )
    ),
    *(
        Field(
            f"{G}/ResumeQueue",
            path,
            kind,
            lambda w: gpb.ResumeQueueRequest(
                tenant_id="acme", queue_id="queue-1", expected_resource_version="1"
            ),
        )
        for path, kind in (
            ("tenant_id", RESOURCE),
            ("queue_id", RESOURCE),
            ("expected_resource_version", NUMBER),
        )
    ),
    # -- governance: partners and routes ---------------------------------------------
    *(
        Field(
            f"{G}/CreatePartner",
            path,
            kind,
            lambda w: gpb.CreatePartnerRequest(
                partner_id="shop-c", display_name="Shop C", region="eu-west-1"
            ),
        )
        for path, kind in (("partner_id", RESOURCE), ("display_name", NAME), ("region", REGION))
    ),
    *(
        Field(
            f"{G}/{verb}PartnerRoute",
            path,
            kind,
            lambda w, r=request: r(
                route_id="route-a",
                spec=_route(),
                **(
                    {"expected_resource_version": "1"} if r is gpb.UpdatePartnerRouteRequest else {}
                ),
            ),
        )
        for verb, request in (
            ("Create", gpb.CreatePartnerRouteRequest),
            ("Update", gpb.UpdatePartnerRouteRequest),
        )
        for path, kind in (
            ("route_id", RESOURCE),
            ("spec.tenant_id", RESOURCE),
            ("spec.queue_id", RESOURCE),
            ("spec.partner_id", RESOURCE),
            ("spec.fallback_partner_id", RESOURCE),
            ("spec.condition.governance_states", REPEATED_ENUM),
            ("spec.condition.source_region", REGION),
        )
    ),
    Field(
        f"{G}/UpdatePartnerRoute",
        "expected_resource_version",
        NUMBER,
        lambda w: gpb.UpdatePartnerRouteRequest(route_id="route-a", spec=_route()),
    ),
    Field(f"{G}/GetPartnerRoute", "route_id", RESOURCE, lambda w: gpb.GetPartnerRouteRequest()),
    Field(
        f"{G}/ListPartnerRoutes", "tenant_id", RESOURCE, lambda w: gpb.ListPartnerRoutesRequest()
    ),
    Field(
        f"{G}/ListPartnerRoutes", "partner_id", RESOURCE, lambda w: gpb.ListPartnerRoutesRequest()
    ),
    *(
        Field(
            f"{G}/DeletePartnerRoute",
            path,
            kind,
            lambda w: gpb.DeletePartnerRouteRequest(
                route_id="route-a", reason="why", expected_resource_version="1"
            ),
        )
        for path, kind in (
            ("route_id", RESOURCE),
            ("reason", REASON),
            ("expected_resource_version", NUMBER),
        )
    ),
    # -- governance: policies ----------------------------------------------------------
    Field(
        f"{G}/SetGovernancePolicy",
        "policy_id",
        RESOURCE,
        lambda w: gpb.SetGovernancePolicyRequest(spec=_lower()),
    ),
    Field(
        f"{G}/SetGovernancePolicy",
        "expected_resource_version",
        NUMBER,
        lambda w: gpb.SetGovernancePolicyRequest(policy_id="pol-a", spec=_lower()),
    ),
    *(
        Field(
            f"{G}/{method}",
            f"{prefix}{path}",
            kind,
            lambda w, m=method, b=base: (
                gpb.SetGovernancePolicyRequest(policy_id="pol-a", spec=b())
                if m == "SetGovernancePolicy"
                else gpb.DryRunGovernancePolicyRequest(spec=b())
            ),
        )
        for method in ("SetGovernancePolicy", "DryRunGovernancePolicy")
        for prefix in ("spec.",)
        for path, kind, base in (
            ("tenant_id", RESOURCE, _lower),
            ("actions", REPEATED_MESSAGE, _lower),
            ("actions[0].parameters['min_capacity']", NUMBER, _lower),
            ("actions[0].parameters['capacity_factor']", NUMBER, _lower),
            ("actions[0].parameters['image']", IMAGE, _reimage),
            ("actions[0].parameters['digest']", SHA256, _reimage),
        )
    ),
    Field(
        f"{G}/SetGovernancePolicy",
        "spec.actions[0].parameters",
        LABELS,
        lambda w: gpb.SetGovernancePolicyRequest(policy_id="pol-a", spec=_lower()),
    ),
    Field(
        f"{G}/DryRunGovernancePolicy",
        "spec.actions[0].parameters",
        LABELS,
        lambda w: gpb.DryRunGovernancePolicyRequest(spec=_lower()),
    ),
    Field(
        f"{G}/DryRunGovernancePolicy",
        "policy_id",
        RESOURCE,
        lambda w: gpb.DryRunGovernancePolicyRequest(),
    ),
    *(
        Field(
            f"{G}/DryRunGovernancePolicy",
            path,
            kind,
            lambda w: gpb.DryRunGovernancePolicyRequest(
                policy_id="pol-a",
                jobs=[common.JobRef(region="eu-west-1", job_id="fix_1779116602946", revision=1)],
            ),
        )
        for path, kind in (
            ("jobs", REPEATED_MESSAGE),
            ("jobs[0].region", REGION),
            ("jobs[0].job_id", OBJECT),
        )
    ),
    Field(
        f"{G}/GetGovernancePolicy",
        "policy_id",
        RESOURCE,
        lambda w: gpb.GetGovernancePolicyRequest(),
    ),
    Field(
        f"{G}/ListGovernancePolicies",
        "tenant_id",
        RESOURCE,
        lambda w: gpb.ListGovernancePoliciesRequest(),
    ),
    Field(
        f"{G}/DeleteGovernancePolicy",
        "policy_id",
        RESOURCE,
        lambda w: gpb.DeleteGovernancePolicyRequest(expected_resource_version="1"),
    ),
    Field(
        f"{G}/DeleteGovernancePolicy",
        "expected_resource_version",
        NUMBER,
        lambda w: gpb.DeleteGovernancePolicyRequest(policy_id="pol-a"),
    ),
    # -- governance: decisions, commands, admin jobs, audit ----------------------------
    Field(f"{G}/ListDecisions", "job_id", OBJECT, lambda w: gpb.ListDecisionsRequest()),
    Field(f"{G}/ListDecisions", "policy_id", RESOURCE, lambda w: gpb.ListDecisionsRequest()),
    Field(f"{G}/ListDecisions", "region", REGION, lambda w: gpb.ListDecisionsRequest()),
    Field(f"{G}/ListCommands", "states", REPEATED_ENUM, lambda w: gpb.ListCommandsRequest()),
    Field(f"{G}/ListCommands", "target", OBJECT, lambda w: gpb.ListCommandsRequest()),
    Field(f"{G}/ListCommands", "decision_id", OBJECT, lambda w: gpb.ListCommandsRequest()),
    Field(f"{G}/GetCommand", "command_id", OBJECT, lambda w: gpb.GetCommandRequest()),
    Field(
        f"{G}/RetryCommand", "command_id", OBJECT, lambda w: gpb.RetryCommandRequest(reason="why")
    ),
    Field(
        f"{G}/RetryCommand", "reason", REASON, lambda w: gpb.RetryCommandRequest(command_id="cmd_x")
    ),
    Field(f"{G}/StartAdminJob", "request_id", OBJECT, lambda w: _drain_job()),
    Field(f"{G}/StartAdminJob", "parameters", LABELS, lambda w: _drain_job()),
    Field(f"{G}/StartAdminJob", "parameters['region']", REGION, lambda w: _drain_job()),
    Field(f"{G}/StartAdminJob", "parameters['reason']", REASON, lambda w: _drain_job()),
    Field(f"{G}/StartAdminJob", "parameters['grace_seconds']", NUMBER, lambda w: _drain_job()),
    Field(f"{G}/StartAdminJob", "parameters['target_image']", IMAGE, lambda w: _rollout_job()),
    Field(f"{G}/StartAdminJob", "parameters['target_digest']", SHA256, lambda w: _rollout_job()),
    Field(
        f"{G}/StartAdminJob",
        "parameters['regions']",
        text(MAX_REGIONS * 64),
        lambda w: gpb.StartAdminJobRequest(
            kind=res.ADMIN_JOB_KIND_SYNC_SWEEP, parameters={"regions": "eu-west-1"}
        ),
    ),
    Field(f"{G}/GetAdminJob", "admin_job_id", OBJECT, lambda w: gpb.GetAdminJobRequest()),
    Field(f"{G}/ListAdminJobs", "kinds", REPEATED_ENUM, lambda w: gpb.ListAdminJobsRequest()),
    Field(f"{G}/ListAdminJobs", "states", REPEATED_ENUM, lambda w: gpb.ListAdminJobsRequest()),
    Field(
        f"{G}/CancelAdminJob",
        "admin_job_id",
        OBJECT,
        lambda w: gpb.CancelAdminJobRequest(reason="why"),
    ),
    Field(
        f"{G}/CancelAdminJob",
        "reason",
        REASON,
        lambda w: gpb.CancelAdminJobRequest(admin_job_id="job_x"),
    ),
    Field(f"{G}/WatchAdminJob", "admin_job_id", OBJECT, lambda w: gpb.WatchAdminJobRequest()),
    Field(f"{G}/ListAuditEntries", "resource_kind", KIND, lambda w: gpb.ListAuditEntriesRequest()),
    Field(
        f"{G}/ListAuditEntries", "resource_id", AUDIT_ID, lambda w: gpb.ListAuditEntriesRequest()
    ),
    Field(
        f"{G}/WatchAuditEntries", "resource_kind", KIND, lambda w: gpb.WatchAuditEntriesRequest()
    ),
    # -- node registry ----------------------------------------------------------------
    *(
        Field(
            f"{N}/CreateEnrollment",
            path,
            kind,
            lambda w: npb.CreateEnrollmentRequest(
                region="eu-west-1", cluster="c1", labels={"tier": "gold"}, request_id="enr-1"
            ),
        )
        for path, kind in (
            ("region", REGION),
            ("cluster", CLUSTER),
            ("labels", LABELS),
            ("request_id", OBJECT),
        )
    ),
    Field(f"{N}/ListEnrollments", "region", REGION, lambda w: npb.ListEnrollmentsRequest()),
    Field(f"{N}/ListEnrollments", "states", REPEATED_ENUM, lambda w: npb.ListEnrollmentsRequest()),
    Field(
        f"{N}/RevokeEnrollment",
        "enrollment_id",
        OBJECT,
        lambda w: npb.RevokeEnrollmentRequest(reason="why"),
    ),
    Field(
        f"{N}/RevokeEnrollment",
        "reason",
        REASON,
        lambda w: npb.RevokeEnrollmentRequest(enrollment_id=w.enrollment_id),
    ),
    Field(
        f"{N}/EnrollNode",
        "hostname",
        HOST,
        lambda w: npb.EnrollNodeRequest(),
        caller="enrolling",
    ),
    *(
        Field(f"{N}/RegisterNode", path, kind, _register, caller="node")
        for path, kind in (
            ("node_id", OBJECT),
            ("region", REGION),
            ("cluster", CLUSTER),
            ("container.image", IMAGE),
            ("container.digest", SHA256),
            ("labels", LABELS),
        )
    ),
    *(
        Field(f"{N}/Heartbeat", path, kind, _heartbeat, caller="node")
        for path, kind in (
            ("node_id", OBJECT),
            ("not_ready_reason", REASON),
            ("container.image", IMAGE),
            ("container.digest", SHA256),
        )
    ),
    Field(
        f"{N}/ReportNodeCommand",
        "command_id",
        OBJECT,
        lambda w: npb.ReportNodeCommandRequest(state=node_pb2.NODE_COMMAND_STATE_ACKNOWLEDGED),
        caller="node",
    ),
    Field(
        f"{N}/ReportNodeCommand",
        "message",
        MESSAGE,
        lambda w: npb.ReportNodeCommandRequest(
            command_id=w.node_command_id, state=node_pb2.NODE_COMMAND_STATE_FAILED
        ),
        caller="node",
    ),
    Field(f"{N}/GetNode", "node_id", OBJECT, lambda w: npb.GetNodeRequest()),
    *(
        Field(
            f"{N}/{method}", f"filter.{path}", kind, lambda w, r=request: r(filter=_node_filter())
        )
        for method, request in (
            ("ListNodes", npb.ListNodesRequest),
            ("WatchNodes", npb.WatchNodesRequest),
        )
        for path, kind in (
            ("region", REGION),
            ("cluster", CLUSTER),
            ("readiness", REPEATED_ENUM),
            ("container_image", IMAGE),
            ("label_selector", SELECTOR),
        )
    ),
    Field(f"{N}/GetVersionRollup", "region", REGION, lambda w: npb.GetVersionRollupRequest()),
    *(
        Field(
            f"{N}/{verb}Node",
            path,
            kind,
            lambda w, r=request: r(
                node_id=w.node.node_id,
                **({} if r is npb.UncordonNodeRequest else {"reason": "why"}),
            ),
        )
        for verb, request in (
            ("Cordon", npb.CordonNodeRequest),
            ("Uncordon", npb.UncordonNodeRequest),
            ("Drain", npb.DrainNodeRequest),
        )
        for path, kind in (
            ("node_id", OBJECT),
            ("expected_resource_version", NUMBER),
            *((("reason", REASON),) if verb != "Uncordon" else ()),
        )
    ),
    *(
        Field(
            f"{N}/ReimageNode",
            path,
            kind,
            lambda w: npb.ReimageNodeRequest(
                node_id=w.node.node_id,
                target=node_pb2.ContainerVersion(image="registry.example/w:2", digest=DIGEST),
                reason="upgrade",
                idempotency_key="key-1",
            ),
        )
        for path, kind in (
            ("node_id", OBJECT),
            ("target.image", IMAGE),
            ("target.digest", SHA256),
            ("reason", REASON),
            ("idempotency_key", OBJECT),
        )
    ),
    Field(f"{N}/GetNodeCommand", "command_id", OBJECT, lambda w: npb.GetNodeCommandRequest()),
    Field(f"{N}/ListNodeCommands", "node_id", OBJECT, lambda w: npb.ListNodeCommandsRequest()),
    Field(
        f"{N}/ListNodeCommands", "states", REPEATED_ENUM, lambda w: npb.ListNodeCommandsRequest()
    ),
    Field(
        f"{N}/CancelNodeCommand",
        "command_id",
        OBJECT,
        lambda w: npb.CancelNodeCommandRequest(reason="why"),
    ),
    Field(
        f"{N}/CancelNodeCommand",
        "reason",
        REASON,
        lambda w: npb.CancelNodeCommandRequest(command_id=w.node_command_id),
    ),
    # -- registry sync ----------------------------------------------------------------
    Field(f"{S}/GetSyncStatus", "region", REGION, lambda w: rpb.GetSyncStatusRequest()),
    Field(
        f"{S}/WatchSyncStatus", "regions", REPEATED_REGION, lambda w: rpb.WatchSyncStatusRequest()
    ),
    Field(f"{S}/StartSweep", "regions", REPEATED_REGION, lambda w: rpb.StartSweepRequest()),
    Field(f"{S}/StartSweep", "request_id", OBJECT, lambda w: rpb.StartSweepRequest()),
    Field(f"{S}/GetSweep", "sweep_id", OBJECT, lambda w: rpb.GetSweepRequest()),
    Field(f"{S}/CancelSweep", "sweep_id", OBJECT, lambda w: rpb.CancelSweepRequest()),
    Field(f"{S}/ListSweeps", "states", REPEATED_ENUM, lambda w: rpb.ListSweepsRequest()),
    Field(
        f"{S}/GetSyncedJob",
        "region",
        REGION,
        lambda w: rpb.GetSyncedJobRequest(job_id="job_1779116602472_1d246"),
    ),
    Field(
        f"{S}/GetSyncedJob", "job_id", OBJECT, lambda w: rpb.GetSyncedJobRequest(region="eu-west-1")
    ),
    Field(f"{S}/ListSyncedJobs", "region", REGION, lambda w: rpb.ListSyncedJobsRequest()),
    Field(f"{S}/ListSyncedJobs", "job_id", OBJECT, lambda w: rpb.ListSyncedJobsRequest()),
    Field(
        f"{S}/ListSyncedJobs",
        "governance_states",
        REPEATED_ENUM,
        lambda w: rpb.ListSyncedJobsRequest(),
    ),
    Field(
        f"{S}/ListQuarantinedRecords",
        "region",
        REGION,
        lambda w: rpb.ListQuarantinedRecordsRequest(),
    ),
    Field(f"{S}/VerifyMirror", "regions", REPEATED_REGION, lambda w: rpb.VerifyMirrorRequest()),
]

# Other fields a hostile value may rightly make wrong (routes name the
# provisioned tenant and queues). Any other violation means the rest of the
# request was not valid, and the case would prove less than it says.
COMPANIONS = {
    "tenant_id": {"routes[0].tenant_id"},
    "queues[0].queue_id": {"routes[0].queue_id"},
}

# String, repeated and map fields no hostile value reaches as such.
NOT_IN_TABLE = {
    "page_token",  # opaque tokens the server issued (their own tests)
}


def all_variants(service: str) -> Iterator[Variant]:
    for field in FIELDS:
        if field.method.startswith(f"{service}/"):
            yield from variants(field)


async def _world(plane: RunningPlane) -> World:
    governance = gpb_grpc.GovernanceServiceStub(plane.channel)
    await governance.CreatePartner(
        gpb.CreatePartnerRequest(partner_id="shop-a", display_name="Shop A", region="eu-west-1"),
        metadata=plane.operator,
    )
    await governance.ProvisionTenant(
        gpb.ProvisionTenantRequest(request_id="req-0", tenant_id="acme"), metadata=plane.operator
    )
    nodes = npb_grpc.NodeRegistryServiceStub(plane.channel)
    node = await enroll_node(plane.channel, plane.operator)
    command = await nodes.ReimageNode(
        npb.ReimageNodeRequest(
            node_id=node.node_id,
            target=node_pb2.ContainerVersion(image="registry.example/w:2", digest=DIGEST),
            reason="upgrade",
        ),
        metadata=plane.operator,
    )
    enrollment = await nodes.CreateEnrollment(
        npb.CreateEnrollmentRequest(region="eu-west-1"), metadata=plane.operator
    )
    return World(
        node, enrollment.enrollment_token, command.command.command_id, enrollment.enrollment_id
    )


def _stub(plane: RunningPlane, service: str) -> Any:
    if service == G:
        return gpb_grpc.GovernanceServiceStub(plane.channel)
    if service == N:
        return npb_grpc.NodeRegistryServiceStub(plane.channel)
    return rpb_grpc.RegistrySyncServiceStub(plane.channel)


def _metadata(plane: RunningPlane, world: World, caller: str) -> tuple[tuple[str, str], ...]:
    if caller == "node":
        return world.node.metadata
    if caller == "enrolling":
        return (("authorization", f"Bearer {world.enrollment_token}"),)
    return plane.operator


async def _refusal(stub: Any, method: str, request: Message, metadata: Any) -> grpc.aio.AioRpcError:
    call = getattr(stub, method)(request, metadata=metadata)
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                break
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("answered without an error")


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found: dict[str, str] = {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update((v.field, v.description) for v in bad.field_violations)
    return found


def _every_row(url: str) -> dict[str, list[tuple[str, ...]]]:
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as connection:
            return {
                table.name: sorted(
                    tuple(str(v) for v in row) for row in connection.execute(select(table))
                )
                for table in meta.sorted_tables
                if table.name not in BACKGROUND_TABLES
            }
    finally:
        engine.dispose()


# Written by background work on its own schedule, whatever the requests.
BACKGROUND_TABLES = {"governance_leases", "leader_leases"}


@pytest.mark.parametrize("service", [G, N, S])
async def test_hostile_field_values_are_refused_by_path_and_change_nothing(
    plane: RunningPlane, service: str
) -> None:
    world = await _world(plane)
    stub = _stub(plane, service)
    before = _every_row(plane.database_url)
    wrong: list[str] = []
    sent = 0
    for variant in all_variants(service):
        method = variant.field.method.split("/", 1)[1]
        metadata = _metadata(plane, world, variant.field.caller)
        try:
            error = await _refusal(stub, method, variant.request(world), metadata)
        except AssertionError as exc:
            wrong.append(f"{variant.id}: {exc}")
            continue
        sent += 1
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            wrong.append(f"{variant.id}: {error.code().name} {error.details()[:200]!r}")
            continue
        fields = set(_violations(error))
        if fields == {"request"} and variant.request(world).ByteSize() > DEFAULT_MAX_REQUEST_BYTES:
            continue  # refused by its size before it is decoded (security/access.py)
        allowed = {variant.expected_path} | COMPANIONS.get(variant.field.path, set())
        if variant.expected_path not in fields or not fields <= allowed:
            wrong.append(f"{variant.id}: violations name {sorted(fields)[:5]}")
    assert sent > 0
    assert wrong == [], "\n".join(wrong)
    assert _every_row(plane.database_url) == before, "a refused call changed the database"


def test_every_string_repeated_and_map_field_of_every_rpc_is_in_the_table() -> None:
    """A request field added later cannot escape the table unnoticed."""
    covered = {(f.method.split("/", 1)[1], f.descriptor_path) for f in FIELDS}
    missing = []
    for module in (gpb, npb, rpb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for path in _checked_paths(method.input_type, ""):
                    if path.rsplit(".", 1)[-1] in NOT_IN_TABLE:
                        continue
                    if (method.name, path) not in covered:
                        missing.append(f"{method.name}: {path}")
    assert missing == []


def _checked_paths(message: Any, prefix: str) -> Iterator[str]:
    for field in message.fields:
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield path
        elif field.type == field.TYPE_MESSAGE:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            if field.is_repeated:
                yield path
            yield from _checked_paths(field.message_type, path + ".")
        elif field.type == field.TYPE_STRING or field.is_repeated:
            yield path


def _pasted_variants(service: str, credentials: dict[str, str]) -> Iterator[tuple[str, Field, str]]:
    """Each credential pasted into each identifier, free-text and selector field."""
    for field in FIELDS:
        if not field.method.startswith(f"{service}/"):
            continue
        if field.kind.name not in ("id", "text", "selector"):
            continue
        for name, credential in credentials.items():
            yield f"{field.method}:{field.path}:{name}", field, f"see {credential}."


@pytest.mark.parametrize("service", [G, N, S])
async def test_a_credential_pasted_into_any_field_is_refused_and_never_stored(
    plane: RunningPlane, service: str, canary_token: str
) -> None:
    world = await _world(plane)
    stub = _stub(plane, service)
    credentials = {
        "control-token": canary_token,
        "node-credential": world.node.credential,
        "enrollment-token": world.enrollment_token,
    }
    before = _every_row(plane.database_url)
    wrong: list[str] = []
    sent = 0
    for case, field, value in _pasted_variants(service, credentials):
        request = field.base(world)
        put(request, field.path, value)
        method = field.method.split("/", 1)[1]
        metadata = _metadata(plane, world, field.caller)
        try:
            error = await _refusal(stub, method, request, metadata)
        except AssertionError as exc:
            wrong.append(f"{case}: {exc}")
            continue
        sent += 1
        reason = refusal(error).reason
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or reason != "CREDENTIAL_IN_REQUEST":
            wrong.append(f"{case}: {error.code().name} {reason}")
        echoed = error.details() + repr(error.trailing_metadata())
        if any(credential in echoed for credential in credentials.values()):
            wrong.append(f"{case}: the credential is echoed in the error")
    assert sent > 0
    assert wrong == [], "\n".join(wrong)
    assert _every_row(plane.database_url) == before, "a refused call changed the database"


async def test_a_credential_in_a_header_is_refused(plane: RunningPlane, canary_token: str) -> None:
    stub = npb_grpc.NodeRegistryServiceStub(plane.channel)
    error = await _refusal(
        stub,
        "ListNodes",
        npb.ListNodesRequest(),
        (*plane.operator, ("x-operator", canary_token)),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert canary_token not in error.details()
