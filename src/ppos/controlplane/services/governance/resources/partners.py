"""Partners: the organisations that receive routed jobs."""

from __future__ import annotations

from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE, Context
from ppos.controlplane.services.governance.convert import partner_to_proto
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.resources import store
from ppos.controlplane.services.governance.resources.specs import validate_partner

PARTNERS_PAGE = Listing(GOVERNANCE_SERVICE + "ListPartners", Ident("partner_id"))


class PartnerHandlers(HandlerBase):
    rpcs = ("CreatePartner", "ListPartners")

    async def CreatePartner(
        self, request: pb.CreatePartnerRequest, context: Context
    ) -> pb.CreatePartnerResponse:
        violations = Violations()
        validate_partner(violations, request.partner_id, request.display_name, request.region)
        violations.raise_if_any()

        row = await self._write(lambda session: store.add_partner(session, request))
        return pb.CreatePartnerResponse(partner=partner_to_proto(row))

    async def ListPartners(
        self, request: pb.ListPartnersRequest, context: Context
    ) -> pb.ListPartnersResponse:
        page = self._page(PARTNERS_PAGE, request.page_size, request.page_token, {})

        rows = await self._db.read(lambda session: store.partner_page(session, page))
        return pb.ListPartnersResponse(
            partners=[partner_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )
