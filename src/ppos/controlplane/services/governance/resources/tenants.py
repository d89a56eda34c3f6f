"""Tenant RPCs: validate, run the use case in one unit of work, build the reply.

The use cases are in provisioning.py (ProvisionTenant) and tenant_changes.py
(update and phase changes); their queries and row writes in store.py.
"""

from __future__ import annotations

from ppos.controlplane.core.handlers import Encoded
from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.selectors import selector_field
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE, Context
from ppos.controlplane.services.governance.convert import tenant_to_proto
from ppos.controlplane.services.governance.enums import TENANT_PHASE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.idempotency import IdempotentCall
from ppos.controlplane.services.governance.models import TenantRow
from ppos.controlplane.services.governance.resources import lookups, store
from ppos.controlplane.services.governance.resources.provisioning import (
    provision_tenant,
    validate_provision,
)
from ppos.controlplane.services.governance.resources.specs import validate_tenant_spec
from ppos.controlplane.services.governance.resources.tenant_changes import (
    PhaseChange,
    set_phase,
    update_tenant,
)

TENANTS_PAGE = Listing(GOVERNANCE_SERVICE + "ListTenants", Ident("tenant_id"))


class TenantHandlers(HandlerBase):
    rpcs = (
        "ProvisionTenant",
        "GetTenant",
        "ListTenants",
        "UpdateTenant",
        "SuspendTenant",
        "ResumeTenant",
        "RetireTenant",
    )

    async def ProvisionTenant(
        self, request: pb.ProvisionTenantRequest, context: Context
    ) -> pb.ProvisionTenantResponse:
        validate_provision(request)
        call = IdempotentCall.of("ProvisionTenant", request)
        actor = current_principal.get()
        regions = self._gateway_regions
        response = await self._write(
            lambda session: provision_tenant(session, request, call, regions, actor)
        )
        if not response.replayed:
            self._on_commands()
        return response

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: Context
    ) -> pb.GetTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.raise_if_any()
        row = await self._db.read(lambda s: lookups.tenant(s, request.tenant_id, lock=False))
        return pb.GetTenantResponse(tenant=tenant_to_proto(row))

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Context) -> Encoded:
        violations = Violations()
        phases = []
        bounded = violations.at_most("phases", request.phases, MAX_ENUM_FILTER)
        for index, phase in enumerate(request.phases if bounded else ()):
            if not TENANT_PHASE.is_known(phase):
                violations.add(f"phases[{index}]", f"{phase} is not a tenant phase")
            else:
                phases.append(TENANT_PHASE.to_name(phase))
        selector = selector_field(violations, "label_selector", request.label_selector)
        violations.raise_if_any()
        page = self._page(
            TENANTS_PAGE,
            request.page_size,
            request.page_token,
            {"phases": sorted(phases), "selector": request.label_selector},
        )
        entries = await store.read_tenant_page(self._db, phases, selector, page)
        # The reply's bytes as ListTenantsResponse encodes them: tenants (field 1)
        # in order, then the token (field 2), encoded alone.
        token = pb.ListTenantsResponse(next_page_token=page.next_token(entries))
        data = b"".join([entry.entry for entry in entries[: page.size]])
        return Encoded(data + token.SerializeToString())

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Context
    ) -> pb.UpdateTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        validate_tenant_spec(violations, "spec", request.spec)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        regions = self._gateway_regions
        row = await self._write(lambda session: update_tenant(session, request, regions))
        return pb.UpdateTenantResponse(tenant=tenant_to_proto(row))

    async def SuspendTenant(
        self, request: pb.SuspendTenantRequest, context: Context
    ) -> pb.SuspendTenantResponse:
        self._validate_phase_change(
            request.tenant_id, request.expected_resource_version, reason=request.reason
        )
        row = await self._set_phase(
            PhaseChange(
                request.tenant_id,
                "SUSPENDED",
                request.reason,
                request.expected_resource_version,
                allowed_from=("ACTIVE",),
            ),
        )
        return pb.SuspendTenantResponse(tenant=tenant_to_proto(row))

    async def ResumeTenant(
        self, request: pb.ResumeTenantRequest, context: Context
    ) -> pb.ResumeTenantResponse:
        self._validate_phase_change(request.tenant_id, request.expected_resource_version)
        row = await self._set_phase(
            PhaseChange(
                request.tenant_id,
                "ACTIVE",
                "",
                request.expected_resource_version,
                allowed_from=("SUSPENDED",),
            ),
        )
        return pb.ResumeTenantResponse(tenant=tenant_to_proto(row))

    async def RetireTenant(
        self, request: pb.RetireTenantRequest, context: Context
    ) -> pb.RetireTenantResponse:
        self._validate_phase_change(
            request.tenant_id, request.expected_resource_version, reason=request.reason
        )
        row = await self._set_phase(
            PhaseChange(
                request.tenant_id,
                "RETIRED",
                request.reason,
                request.expected_resource_version,
                allowed_from=("ACTIVE", "SUSPENDED"),
            ),
        )
        return pb.RetireTenantResponse(tenant=tenant_to_proto(row))

    @staticmethod
    def _validate_phase_change(
        tenant_id: str, expected_version: str, *, reason: str | None = None
    ) -> None:
        """`reason` None: the call takes none (ResumeTenant)."""
        violations = Violations()
        violations.resource_id("tenant_id", tenant_id)
        if reason is not None:
            violations.reason("reason", reason)
        violations.resource_version("expected_resource_version", expected_version)
        violations.raise_if_any()

    async def _set_phase(self, change: PhaseChange) -> TenantRow:
        actor = current_principal.get()
        tenant, changed = await self._write(lambda session: set_phase(session, change, actor))
        if changed:
            self._on_commands()
        return tenant
