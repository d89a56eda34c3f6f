"""Partner routes: which partner receives which tenant's (or queue's) jobs."""

from __future__ import annotations

from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE, Context
from ppos.controlplane.services.governance.convert import route_to_proto
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.resources import lookups, store
from ppos.controlplane.services.governance.resources.route_changes import (
    create_route,
    delete_route,
    update_route,
)
from ppos.controlplane.services.governance.resources.specs import validate_route_spec

ROUTES_PAGE = Listing(GOVERNANCE_SERVICE + "ListPartnerRoutes", Ident("route_id"))


class RouteHandlers(HandlerBase):
    rpcs = (
        "CreatePartnerRoute",
        "GetPartnerRoute",
        "ListPartnerRoutes",
        "UpdatePartnerRoute",
        "DeletePartnerRoute",
    )

    async def CreatePartnerRoute(
        self, request: pb.CreatePartnerRouteRequest, context: Context
    ) -> pb.CreatePartnerRouteResponse:
        violations = Violations()
        violations.resource_id("route_id", request.route_id)
        validate_route_spec(violations, "spec", request.spec)
        violations.raise_if_any()
        actor = current_principal.get()
        regions = self._gateway_regions
        row = await self._write(lambda session: create_route(session, request, regions, actor))
        self._on_commands()
        return pb.CreatePartnerRouteResponse(route=route_to_proto(row))

    async def GetPartnerRoute(
        self, request: pb.GetPartnerRouteRequest, context: Context
    ) -> pb.GetPartnerRouteResponse:
        violations = Violations()
        violations.resource_id("route_id", request.route_id)
        violations.raise_if_any()
        row = await self._db.read(lambda s: lookups.route(s, request.route_id, lock=False))
        return pb.GetPartnerRouteResponse(route=route_to_proto(row))

    async def ListPartnerRoutes(
        self, request: pb.ListPartnerRoutesRequest, context: Context
    ) -> pb.ListPartnerRoutesResponse:
        violations = Violations()
        if request.tenant_id:
            violations.resource_id("tenant_id", request.tenant_id)
        if request.partner_id:
            violations.resource_id("partner_id", request.partner_id)
        violations.raise_if_any()
        page = self._page(
            ROUTES_PAGE,
            request.page_size,
            request.page_token,
            {"tenant": request.tenant_id, "partner": request.partner_id},
        )

        rows = await self._db.read(
            lambda session: store.route_page(
                session, page, tenant_id=request.tenant_id, partner_id=request.partner_id
            )
        )
        return pb.ListPartnerRoutesResponse(
            routes=[route_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )

    async def UpdatePartnerRoute(
        self, request: pb.UpdatePartnerRouteRequest, context: Context
    ) -> pb.UpdatePartnerRouteResponse:
        violations = Violations()
        violations.resource_id("route_id", request.route_id)
        validate_route_spec(violations, "spec", request.spec)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        actor = current_principal.get()
        regions = self._gateway_regions
        row = await self._write(lambda session: update_route(session, request, regions, actor))
        self._on_commands()
        return pb.UpdatePartnerRouteResponse(route=route_to_proto(row))

    async def DeletePartnerRoute(
        self, request: pb.DeletePartnerRouteRequest, context: Context
    ) -> pb.DeletePartnerRouteResponse:
        violations = Violations()
        violations.resource_id("route_id", request.route_id)
        violations.reason("reason", request.reason)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        actor = current_principal.get()
        shown = await self._write(lambda session: delete_route(session, request, actor))
        self._on_commands()
        return pb.DeletePartnerRouteResponse(route=shown)
