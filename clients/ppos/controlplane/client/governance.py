"""GovernanceService: tenants, queues, partners, routes, policies, decisions,
the command outbox, admin jobs and the audit log."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ppos.controlplane.client.connection import Connection, Stream, new_request_id
from ppos.controlplane.common.v1 import resource_pb2
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res

SERVICE = "ppos.controlplane.governance.v1.GovernanceService"
Page = TypeVar("Page", bound=Any)


def collect(fetch: Callable[[str], Page], field: str, limit: int = 0) -> Page:
    """Follow `next_page_token` and merge the pages' `field` (at most `limit` items)."""
    merged: Page | None = None
    token = ""
    while True:
        page = fetch(token)
        if merged is None:
            merged = page
        else:
            getattr(merged, field).extend(getattr(page, field))
        token = page.next_page_token
        items = getattr(merged, field)
        if not token or (limit and len(items) >= limit):
            if limit:
                del items[limit:]
            merged.next_page_token = ""
            return merged


class GovernanceClient:
    """Operator calls of the governance service, one method per RPC."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._stub = pb_grpc.GovernanceServiceStub(connection.channel)

    # -- tenants -----------------------------------------------------------------

    def provision_tenant(
        self,
        tenant_id: str,
        spec: res.TenantSpec,
        *,
        queues: Sequence[pb.QueueTemplate] = (),
        routes: Sequence[res.PartnerRouteSpec] = (),
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> pb.ProvisionTenantResponse:
        request = pb.ProvisionTenantRequest(
            request_id=request_id or new_request_id("prov"),
            tenant_id=tenant_id,
            spec=spec,
            queues=list(queues),
            routes=list(routes),
            labels=dict(labels or {}),
        )
        return self.provision_tenant_request(request)

    def provision_tenant_request(
        self, request: pb.ProvisionTenantRequest
    ) -> pb.ProvisionTenantResponse:
        if not request.request_id:
            request.request_id = new_request_id("prov")
        return self._conn.unary(self._stub.ProvisionTenant, request, name="ProvisionTenant")

    def get_tenant(self, tenant_id: str) -> res.Tenant:
        request = pb.GetTenantRequest(tenant_id=tenant_id)
        return self._conn.unary(self._stub.GetTenant, request, name="GetTenant").tenant

    def list_tenants(
        self,
        *,
        phases: Iterable[res.TenantPhase.ValueType] = (),
        label_selector: str = "",
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListTenantsResponse:
        def fetch(token: str) -> pb.ListTenantsResponse:
            request = pb.ListTenantsRequest(
                phases=list(phases),
                label_selector=label_selector,
                page_size=page_size,
                page_token=token,
            )
            return self._conn.unary(self._stub.ListTenants, request, name="ListTenants")

        return collect(fetch, "tenants", limit)

    def update_tenant(
        self, tenant_id: str, spec: res.TenantSpec, *, expected_resource_version: str
    ) -> res.Tenant:
        request = pb.UpdateTenantRequest(
            tenant_id=tenant_id, spec=spec, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.UpdateTenant, request, name="UpdateTenant").tenant

    def suspend_tenant(
        self, tenant_id: str, *, reason: str, expected_resource_version: str = ""
    ) -> res.Tenant:
        request = pb.SuspendTenantRequest(
            tenant_id=tenant_id, reason=reason, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.SuspendTenant, request, name="SuspendTenant").tenant

    def resume_tenant(self, tenant_id: str, *, expected_resource_version: str = "") -> res.Tenant:
        request = pb.ResumeTenantRequest(
            tenant_id=tenant_id, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.ResumeTenant, request, name="ResumeTenant").tenant

    def retire_tenant(
        self, tenant_id: str, *, reason: str, expected_resource_version: str = ""
    ) -> res.Tenant:
        request = pb.RetireTenantRequest(
            tenant_id=tenant_id, reason=reason, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(self._stub.RetireTenant, request, name="RetireTenant").tenant

    # -- queues ------------------------------------------------------------------

    def create_queue(
        self, tenant_id: str, queue_id: str, spec: res.QueueSpec, *, request_id: str | None = None
    ) -> res.Queue:
        request = pb.CreateQueueRequest(
            tenant_id=tenant_id,
            queue_id=queue_id,
            spec=spec,
            request_id=request_id or new_request_id("queue"),
        )
        return self._conn.unary(self._stub.CreateQueue, request, name="CreateQueue").queue

    def get_queue(self, tenant_id: str, queue_id: str) -> res.Queue:
        request = pb.GetQueueRequest(tenant_id=tenant_id, queue_id=queue_id)
        return self._conn.unary(self._stub.GetQueue, request, name="GetQueue").queue

    def list_queues(
        self,
        *,
        tenant_id: str = "",
        region: str = "",
        states: Iterable[res.QueueState.ValueType] = (),
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListQueuesResponse:
        def fetch(token: str) -> pb.ListQueuesResponse:
            request = pb.ListQueuesRequest(
                tenant_id=tenant_id,
                region=region,
                states=list(states),
                page_size=page_size,
                page_token=token,
            )
            return self._conn.unary(self._stub.ListQueues, request, name="ListQueues")

        return collect(fetch, "queues", limit)

    def resize_queue(
        self,
        tenant_id: str,
        queue_id: str,
        capacity: int,
        *,
        reason: str,
        expected_resource_version: str,
    ) -> res.Queue:
        request = pb.ResizeQueueRequest(
            tenant_id=tenant_id,
            queue_id=queue_id,
            capacity=capacity,
            reason=reason,
            expected_resource_version=expected_resource_version,
        )
        return self._conn.unary(self._stub.ResizeQueue, request, name="ResizeQueue").queue

    def pause_queue(
        self, tenant_id: str, queue_id: str, *, reason: str, expected_resource_version: str = ""
    ) -> res.Queue:
        request = pb.PauseQueueRequest(
            tenant_id=tenant_id,
            queue_id=queue_id,
            reason=reason,
            expected_resource_version=expected_resource_version,
        )
        return self._conn.unary(self._stub.PauseQueue, request, name="PauseQueue").queue

    def drain_queue(
        self, tenant_id: str, queue_id: str, *, reason: str, expected_resource_version: str = ""
    ) -> res.Queue:
        request = pb.DrainQueueRequest(
            tenant_id=tenant_id,
            queue_id=queue_id,
            reason=reason,
            expected_resource_version=expected_resource_version,
        )
        return self._conn.unary(self._stub.DrainQueue, request, name="DrainQueue").queue

    def resume_queue(
        self, tenant_id: str, queue_id: str, *, expected_resource_version: str = ""
    ) -> res.Queue:
        request = pb.ResumeQueueRequest(
            tenant_id=tenant_id,
            queue_id=queue_id,
            expected_resource_version=expected_resource_version,
        )
        return self._conn.unary(self._stub.ResumeQueue, request, name="ResumeQueue").queue

    # -- partners and routes -----------------------------------------------------

    def create_partner(
        self, partner_id: str, *, display_name: str, region: str, accepts_review: bool = False
    ) -> res.Partner:
        request = pb.CreatePartnerRequest(
            partner_id=partner_id,
            display_name=display_name,
            region=region,
            accepts_review=accepts_review,
        )
        return self._conn.unary(self._stub.CreatePartner, request, name="CreatePartner").partner

    def list_partners(self, *, page_size: int = 0, limit: int = 0) -> pb.ListPartnersResponse:
        def fetch(token: str) -> pb.ListPartnersResponse:
            request = pb.ListPartnersRequest(page_size=page_size, page_token=token)
            return self._conn.unary(self._stub.ListPartners, request, name="ListPartners")

        return collect(fetch, "partners", limit)

    def create_route(self, route_id: str, spec: res.PartnerRouteSpec) -> res.PartnerRoute:
        request = pb.CreatePartnerRouteRequest(route_id=route_id, spec=spec)
        return self._conn.unary(
            self._stub.CreatePartnerRoute, request, name="CreatePartnerRoute"
        ).route

    def get_route(self, route_id: str) -> res.PartnerRoute:
        request = pb.GetPartnerRouteRequest(route_id=route_id)
        return self._conn.unary(self._stub.GetPartnerRoute, request, name="GetPartnerRoute").route

    def list_routes(
        self, *, tenant_id: str = "", partner_id: str = "", page_size: int = 0, limit: int = 0
    ) -> pb.ListPartnerRoutesResponse:
        def fetch(token: str) -> pb.ListPartnerRoutesResponse:
            request = pb.ListPartnerRoutesRequest(
                tenant_id=tenant_id, partner_id=partner_id, page_size=page_size, page_token=token
            )
            return self._conn.unary(self._stub.ListPartnerRoutes, request, name="ListPartnerRoutes")

        return collect(fetch, "routes", limit)

    def update_route(
        self, route_id: str, spec: res.PartnerRouteSpec, *, expected_resource_version: str
    ) -> res.PartnerRoute:
        request = pb.UpdatePartnerRouteRequest(
            route_id=route_id, spec=spec, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(
            self._stub.UpdatePartnerRoute, request, name="UpdatePartnerRoute"
        ).route

    def delete_route(
        self, route_id: str, *, reason: str, expected_resource_version: str
    ) -> res.PartnerRoute:
        request = pb.DeletePartnerRouteRequest(
            route_id=route_id, reason=reason, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(
            self._stub.DeletePartnerRoute, request, name="DeletePartnerRoute"
        ).route

    # -- policies and decisions --------------------------------------------------

    def set_policy(
        self, policy_id: str, spec: res.GovernancePolicySpec, *, expected_resource_version: str = ""
    ) -> res.GovernancePolicy:
        request = pb.SetGovernancePolicyRequest(
            policy_id=policy_id, spec=spec, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(
            self._stub.SetGovernancePolicy, request, name="SetGovernancePolicy"
        ).policy

    def get_policy(self, policy_id: str) -> res.GovernancePolicy:
        request = pb.GetGovernancePolicyRequest(policy_id=policy_id)
        return self._conn.unary(
            self._stub.GetGovernancePolicy, request, name="GetGovernancePolicy"
        ).policy

    def list_policies(
        self, *, tenant_id: str = "", page_size: int = 0, limit: int = 0
    ) -> pb.ListGovernancePoliciesResponse:
        def fetch(token: str) -> pb.ListGovernancePoliciesResponse:
            request = pb.ListGovernancePoliciesRequest(
                tenant_id=tenant_id, page_size=page_size, page_token=token
            )
            return self._conn.unary(
                self._stub.ListGovernancePolicies, request, name="ListGovernancePolicies"
            )

        return collect(fetch, "policies", limit)

    def delete_policy(
        self, policy_id: str, *, expected_resource_version: str
    ) -> res.GovernancePolicy:
        request = pb.DeleteGovernancePolicyRequest(
            policy_id=policy_id, expected_resource_version=expected_resource_version
        )
        return self._conn.unary(
            self._stub.DeleteGovernancePolicy, request, name="DeleteGovernancePolicy"
        ).policy

    def dry_run_policy(
        self,
        *,
        policy_id: str = "",
        spec: res.GovernancePolicySpec | None = None,
        jobs: Sequence[resource_pb2.JobRef] = (),
        limit: int = 0,
    ) -> list[res.Decision]:
        """The decisions a policy would make now; nothing is stored or sent."""
        reply = self.dry_run_policy_reply(policy_id=policy_id, spec=spec, jobs=jobs, limit=limit)
        return list(reply.decisions)

    def dry_run_policy_reply(
        self,
        *,
        policy_id: str = "",
        spec: res.GovernancePolicySpec | None = None,
        jobs: Sequence[resource_pb2.JobRef] = (),
        limit: int = 0,
    ) -> pb.DryRunGovernancePolicyResponse:
        """The whole dry run: decisions, and how many already-synced jobs enabling acts on."""
        request = pb.DryRunGovernancePolicyRequest(
            policy_id=policy_id, spec=spec, jobs=list(jobs), limit=limit
        )
        return self._conn.unary(
            self._stub.DryRunGovernancePolicy, request, name="DryRunGovernancePolicy"
        )

    def list_decisions(
        self,
        *,
        job_id: str = "",
        policy_id: str = "",
        region: str = "",
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListDecisionsResponse:
        def fetch(token: str) -> pb.ListDecisionsResponse:
            request = pb.ListDecisionsRequest(
                job_id=job_id,
                policy_id=policy_id,
                region=region,
                page_size=page_size,
                page_token=token,
            )
            return self._conn.unary(self._stub.ListDecisions, request, name="ListDecisions")

        return collect(fetch, "decisions", limit)

    # -- outbox ------------------------------------------------------------------

    def list_commands(
        self,
        *,
        states: Iterable[res.CommandState.ValueType] = (),
        target: str = "",
        decision_id: str = "",
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListCommandsResponse:
        def fetch(token: str) -> pb.ListCommandsResponse:
            request = pb.ListCommandsRequest(
                states=list(states),
                target=target,
                decision_id=decision_id,
                page_size=page_size,
                page_token=token,
            )
            return self._conn.unary(self._stub.ListCommands, request, name="ListCommands")

        return collect(fetch, "commands", limit)

    def get_command(self, command_id: str) -> res.OutboxCommand:
        request = pb.GetCommandRequest(command_id=command_id)
        return self._conn.unary(self._stub.GetCommand, request, name="GetCommand").command

    def retry_command(self, command_id: str, *, reason: str) -> res.OutboxCommand:
        """Put a FAILED command back in line, with the same idempotency key."""
        request = pb.RetryCommandRequest(command_id=command_id, reason=reason)
        return self._conn.unary(self._stub.RetryCommand, request, name="RetryCommand").command

    # -- admin jobs ----------------------------------------------------------------

    def start_admin_job(
        self,
        kind: res.AdminJobKind.ValueType,
        *,
        parameters: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> res.AdminJob:
        request = pb.StartAdminJobRequest(
            kind=kind,
            parameters=dict(parameters or {}),
            request_id=request_id or new_request_id("job"),
        )
        return self._conn.unary(self._stub.StartAdminJob, request, name="StartAdminJob").job

    def get_admin_job(self, admin_job_id: str) -> res.AdminJob:
        request = pb.GetAdminJobRequest(admin_job_id=admin_job_id)
        return self._conn.unary(self._stub.GetAdminJob, request, name="GetAdminJob").job

    def list_admin_jobs(
        self,
        *,
        kinds: Iterable[res.AdminJobKind.ValueType] = (),
        states: Iterable[res.AdminJobState.ValueType] = (),
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListAdminJobsResponse:
        def fetch(token: str) -> pb.ListAdminJobsResponse:
            request = pb.ListAdminJobsRequest(
                kinds=list(kinds), states=list(states), page_size=page_size, page_token=token
            )
            return self._conn.unary(self._stub.ListAdminJobs, request, name="ListAdminJobs")

        return collect(fetch, "jobs", limit)

    def cancel_admin_job(self, admin_job_id: str, *, reason: str) -> res.AdminJob:
        request = pb.CancelAdminJobRequest(admin_job_id=admin_job_id, reason=reason)
        return self._conn.unary(self._stub.CancelAdminJob, request, name="CancelAdminJob").job

    def watch_admin_job(self, admin_job_id: str) -> Stream[pb.WatchAdminJobResponse]:
        request = pb.WatchAdminJobRequest(admin_job_id=admin_job_id)
        return self._conn.stream(self._stub.WatchAdminJob, request, name="WatchAdminJob")

    # -- audit ---------------------------------------------------------------------

    def list_audit(
        self,
        *,
        after_audit_id: int = 0,
        resource_kind: str = "",
        resource_id: str = "",
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListAuditEntriesResponse:
        """Entries oldest first after `after_audit_id`, following `has_more` up to `limit`."""
        merged = pb.ListAuditEntriesResponse()
        after = after_audit_id
        while True:
            request = pb.ListAuditEntriesRequest(
                after_audit_id=after,
                resource_kind=resource_kind,
                resource_id=resource_id,
                page_size=page_size,
            )
            page = self._conn.unary(self._stub.ListAuditEntries, request, name="ListAuditEntries")
            merged.entries.extend(page.entries)
            merged.has_more = page.has_more
            if not page.has_more or not page.entries or (limit and len(merged.entries) >= limit):
                if limit and len(merged.entries) > limit:
                    del merged.entries[limit:]
                    merged.has_more = True
                return merged
            after = page.entries[-1].audit_id

    def watch_audit(
        self, *, after_audit_id: int = 0, resource_kind: str = ""
    ) -> Stream[pb.WatchAuditEntriesResponse]:
        request = pb.WatchAuditEntriesRequest(
            after_audit_id=after_audit_id, resource_kind=resource_kind
        )
        return self._conn.stream(self._stub.WatchAuditEntries, request, name="WatchAuditEntries")
