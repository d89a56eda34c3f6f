"""Governance: tenants, queues (resize, pause, drain, resume), routes, policies."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import change, form_text, page, render

LIST_LIMIT = 200
QUEUE_ACTIONS = ("resize", "pause", "drain", "resume")


def governance_lists(clients: OperatorClients) -> dict[str, Any]:
    governance = clients.governance
    return {
        "tenants": list(governance.list_tenants(limit=LIST_LIMIT).tenants),
        "queues": list(governance.list_queues(limit=LIST_LIMIT).queues),
        "routes": list(governance.list_routes(limit=LIST_LIMIT).routes),
        "policies": list(governance.list_policies(limit=LIST_LIMIT).policies),
        "limit": LIST_LIMIT,
    }


@page
async def governance_page(request: Request, session: Session) -> Response:
    context = await call(governance_lists, session.clients)
    context["message"] = request.query_params.get("done", "")[:100]
    return render(request, "governance.html", context, session=session)


def queue_action(clients: OperatorClients, action: str, form: FormData) -> str:
    tenant_id, queue_id = form_text(form, "tenant_id"), form_text(form, "queue_id")
    reason = form_text(form, "reason", limit=500)
    version = form_text(form, "resource_version", limit=100)
    governance = clients.governance
    if action == "resize":
        capacity = form_text(form, "capacity", limit=10)
        governance.resize_queue(
            tenant_id,
            queue_id,
            int(capacity) if capacity.isdigit() else -1,  # the plane names a bad value
            reason=reason,
            expected_resource_version=version,
        )
    elif action == "pause":
        governance.pause_queue(
            tenant_id, queue_id, reason=reason, expected_resource_version=version
        )
    elif action == "drain":
        governance.drain_queue(
            tenant_id, queue_id, reason=reason, expected_resource_version=version
        )
    else:
        governance.resume_queue(tenant_id, queue_id, expected_resource_version=version)
    return f"Queue {tenant_id}/{queue_id}: {action} done"


@change
async def queue_change(request: Request, session: Session, form: FormData) -> Response:
    action = request.path_params["action"]
    if action not in QUEUE_ACTIONS:
        return Response("no such action", status_code=404)
    message = await call(queue_action, session.clients, action, form)
    return RedirectResponse("/governance?" + urlencode({"done": message}), status_code=303)


def fallback_chain(route: res.PartnerRoute, routes: list[res.PartnerRoute]) -> list[str]:
    """The partners a job of the route's queue tries in order: its partner, its
    fallback, then the fallback of that partner's route for the same queue, and so on
    (a partner met twice ends the chain)."""
    chain = [route.spec.partner_id]
    following: res.PartnerRoute | None = route
    while following is not None and following.spec.fallback_partner_id:
        partner = following.spec.fallback_partner_id
        if partner in chain:
            break
        chain.append(partner)
        following = next(
            (
                r
                for r in routes
                if r.spec.partner_id == partner
                and (r.spec.tenant_id, r.spec.queue_id)
                == (route.spec.tenant_id, route.spec.queue_id)
            ),
            None,
        )
    return chain


def partners_context(clients: OperatorClients) -> dict[str, Any]:
    partners = {
        p.partner_id: p for p in clients.governance.list_partners(limit=LIST_LIMIT).partners
    }
    routes = list(clients.governance.list_routes(limit=LIST_LIMIT).routes)
    chains = [(route, fallback_chain(route, routes)) for route in routes]
    return {"partners": partners, "chains": chains, "limit": LIST_LIMIT}


@page
async def partners_page(request: Request, session: Session) -> Response:
    context = await call(partners_context, session.clients)
    return render(request, "partners.html", context, session=session)


routes = [
    Route("/governance", governance_page),
    Route("/governance/partners", partners_page),
    Route("/governance/queues/{action}", queue_change, methods=["POST"]),
]
