"""Partner routing rules: fallback cycles, and which gateways hear of a route.

A route sends a tenant's (or one queue's) jobs to a partner and names a
partner to fall back to when that one refuses. Within a tenant, the fallbacks
form a graph partner -> fallback partner; a cycle in it would pass a refused
job around forever, so a write that would close one is refused with the cycle
spelled out.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, PreconditionViolation
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.models import PartnerRouteRow, QueueRow, TenantRow
from ppos.controlplane.services.governance.outbox import commands


def find_cycle(edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """A cycle in the directed graph as [a, b, ..., a], or None."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    white, grey, black = 0, 1, 2
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            state = colour.get(nxt, white)
            if state == grey:
                return [*path[path.index(nxt) :], nxt]
            if state == white:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        colour[node] = black
        return None

    for start in sorted(graph):
        if colour.get(start, white) == white:
            found = visit(start)
            if found:
                return found
    return None


def fallback_edges(routes: Iterable[tuple[str, str | None]]) -> list[tuple[str, str]]:
    return [(partner, fallback) for partner, fallback in routes if fallback]


def refuse_cycles(
    session: Session,
    tenant_id: str,
    proposed: list[tuple[str, str | None]],
    *,
    replacing: str = "",
    field: str = "spec.fallback_partner_id",
) -> None:
    """FAILED_PRECONDITION when the tenant's routes plus `proposed` form a fallback cycle."""
    existing = session.execute(
        select(
            PartnerRouteRow.route_id,
            PartnerRouteRow.partner_id,
            PartnerRouteRow.fallback_partner_id,
        ).where(PartnerRouteRow.tenant_id == tenant_id)
    ).all()
    edges = fallback_edges(
        [(partner, fallback) for route_id, partner, fallback in existing if route_id != replacing]
        + proposed
    )
    cycle = find_cycle(edges)
    if cycle:
        spelled = " -> ".join(cycle)
        raise FailedPrecondition(
            f"routing cycle through fallbacks for tenant {tenant_id!r}: {spelled}; "
            f"change {field} so a refused job cannot come back to a partner it left",
            [PreconditionViolation("ROUTING_CYCLE", f"tenant/{tenant_id}", spelled)],
            reason="ROUTING_CYCLE",
            metadata={"cycle": spelled},
        )


def route_regions(session: Session, route: PartnerRouteRow, tenant: TenantRow) -> set[str]:
    """Regions whose gateways must hold the route."""
    if route.condition_source_region:
        return {route.condition_source_region}
    if route.queue_id:
        queue = session.get(QueueRow, (route.tenant_id, route.queue_id))
        return {queue.region} if queue is not None else set()
    regions = set(
        session.scalars(
            select(QueueRow.region).where(QueueRow.tenant_id == route.tenant_id).distinct()
        )
    )
    if tenant.default_region:
        regions.add(tenant.default_region)
    return regions


def push_route(
    session: Session,
    route: PartnerRouteRow,
    regions: Iterable[str],
    reason: str,
    actor: Principal,
    *,
    delete: bool = False,
) -> list[str]:
    """Enqueue the route (or its removal) to each region's gateway; returns command ids."""
    ids = []
    for region in sorted(set(regions)):
        command = commands.apply_partner_route(route, region, reason, delete=delete)
        ids.append(commands.enqueue(session, command, actor=actor).command_id)
    return ids


def tenant_wide_routes(session: Session, tenant_id: str) -> list[PartnerRouteRow]:
    return list(
        session.scalars(
            select(PartnerRouteRow).where(
                PartnerRouteRow.tenant_id == tenant_id,
                PartnerRouteRow.queue_id == "",
                PartnerRouteRow.condition_source_region == "",
            )
        )
    )


def require_regions(route: PartnerRouteRow, regions: set[str]) -> None:
    """Refuse a route no gateway would hold (the tenant has no queue and no default region)."""
    if not regions:
        raise FailedPrecondition(
            f"route {route.route_id!r} applies in no region: tenant {route.tenant_id!r} has no "
            "queues and no default region; create a queue or name a source region first",
            [
                PreconditionViolation(
                    "NO_REGION", f"tenant/{route.tenant_id}", "no gateway would hold the route"
                )
            ],
            reason="ROUTE_HAS_NO_REGION",
        )
