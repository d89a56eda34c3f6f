"""Nodes: a live, filtered, paged table; a node's detail; cordon, drain, re-image.

Paging follows the ListNodes page tokens (the server's, opaque), so 10,000 nodes are
read a page at a time, in the order the operator chose by a column's heading (the
plane sorts: node id, region, readiness or image, either way; a token holds only for
its order). The tokens only go forward, so "Previous page" follows the tokens this
operator's session went through (a page reached by a bookmarked link offers "First
page" instead). Actions that take a node out of service confirm in two steps:
the first asks what and why, the second asks for the node's name, and the server
checks that name before acting (so the confirmation holds without JavaScript too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.portal.live import live_response
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import change, form_text, page, portal_of, render

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
READINESS = [name.removeprefix("READINESS_") for name in node_pb2.Readiness.keys()][1:]  # noqa: SIM118 - an enum wrapper, not a dict
# The table's sortable columns: the query's `sort` value, the plane's order.
SORTS = {
    "node": pb.NODE_ORDER_NODE_ID,
    "region": pb.NODE_ORDER_REGION,
    "readiness": pb.NODE_ORDER_READINESS,
    "image": pb.NODE_ORDER_CONTAINER_IMAGE,
}
# Actions confirmed in two steps, with what each asks for beyond a reason.
TWO_STEP = {"cordon": "Cordon", "drain": "Drain", "reimage": "Re-image"}


@dataclass(frozen=True)
class NodeQuery:
    region: str = ""
    readiness: str = ""
    image: str = ""
    labels: str = ""
    page_token: str = ""
    page_size: int = PAGE_SIZE
    sort: str = "node"
    descending: bool = False

    @classmethod
    def from_params(cls, params: QueryParams) -> NodeQuery:
        def value(name: str) -> str:
            return params.get(name, "").strip()[:512]

        readiness = value("readiness").upper()
        size = value("page_size")
        sort = value("sort")
        return cls(
            page_size=min(int(size), MAX_PAGE_SIZE) if size.isdigit() and int(size) else PAGE_SIZE,
            region=value("region"),
            readiness=readiness if readiness in READINESS else "",
            image=value("image"),
            labels=value("labels"),
            page_token=params.get("page_token", "")[:2048],
            sort=sort if sort in SORTS else "node",
            descending=value("desc") == "1",
        )

    def node_filter(self) -> node_pb2.NodeFilter:
        readiness = []
        if self.readiness:
            readiness = [node_pb2.Readiness.Value("READINESS_" + self.readiness)]
        return node_pb2.NodeFilter(
            region=self.region,
            readiness=readiness,
            container_image=self.image,
            label_selector=self.labels,
        )

    def query_string(self, *, page_token: str | None = None) -> str:
        fields = {
            "region": self.region,
            "readiness": self.readiness,
            "image": self.image,
            "labels": self.labels,
            "page_token": self.page_token if page_token is None else page_token,
            "page_size": str(self.page_size) if self.page_size != PAGE_SIZE else "",
            "sort": self.sort if self.sort != "node" else "",
            "desc": "1" if self.descending else "",
        }
        return urlencode({k: v for k, v in fields.items() if v})

    def sorted_by(self, column: str) -> str:
        """The query string of the first page sorted by `column`: ascending, or the
        other way when it is sorted by it already."""
        descending = column == self.sort and not self.descending
        return replace(self, sort=column, descending=descending).query_string(page_token="")

    def aria_sort(self, column: str) -> str:
        if column != self.sort:
            return "none"
        return "descending" if self.descending else "ascending"


def list_page(clients: OperatorClients, query: NodeQuery) -> pb.ListNodesResponse:
    return clients.nodes.list_nodes_page(
        query.node_filter(),
        page_size=query.page_size,
        page_token=query.page_token,
        order_by=SORTS[query.sort],
        descending=query.descending,
    )


TRAILS_KEPT, TRAIL_PAGES = 20, 1000  # filters remembered per session, pages per filter


def follow_page(session: Session, query: NodeQuery, next_token: str) -> None:
    """Remember that `query`'s page leads to `next_token`, for the way back."""
    key = query.query_string(page_token="")
    trail = session.node_pages.pop(key, None) or [""]
    session.node_pages[key] = trail  # most recent last
    while len(session.node_pages) > TRAILS_KEPT:
        del session.node_pages[next(iter(session.node_pages))]
    if query.page_token not in trail:
        return
    del trail[trail.index(query.page_token) + 1 :]
    if next_token and len(trail) < TRAIL_PAGES:
        trail.append(next_token)


def previous_page(session: Session | None, query: NodeQuery) -> str | None:
    """The query string of the page before `query`'s, if this session came that way."""
    if session is None or not query.page_token:
        return None
    trail = session.node_pages.get(query.query_string(page_token=""), [])
    if query.page_token not in trail or trail.index(query.page_token) == 0:
        return None
    return query.query_string(page_token=trail[trail.index(query.page_token) - 1])


def table_context(query: NodeQuery, reply: pb.ListNodesResponse) -> dict[str, Any]:
    return {
        "nodes": list(reply.nodes),
        "next_page": query.query_string(page_token=reply.next_page_token)
        if reply.next_page_token
        else "",
        "query": query,
    }


@page
async def nodes_page(request: Request, session: Session) -> Response:
    query = NodeQuery.from_params(request.query_params)
    reply = await call(list_page, session.clients, query)
    follow_page(session, query, reply.next_page_token)
    context = table_context(query, reply)
    context.update(
        readiness_names=READINESS, live_query=query.query_string(), previous_page=previous_page
    )
    return render(request, "nodes.html", context, session=session)


async def nodes_events(request: Request) -> Response:
    """The table of one filter and page, read again (one ListNodes of that page) when
    the portal's WatchNodes stream reports a change, not on a timer."""
    query = NodeQuery.from_params(request.query_params)

    async def read(session: Session) -> dict[str, Any]:
        return table_context(query, await call(list_page, session.clients, query))

    upstreams = (portal_of(request).hub.nodes,)
    return live_response(request, ("nodes", query), "_nodes_table.html", "nodes", read, upstreams)


def node_detail(clients: OperatorClients, node_id: str) -> dict[str, Any]:
    node = clients.nodes.get_node(node_id)
    commands = clients.nodes.list_commands(node_id=node_id, limit=50).commands
    audit = clients.governance.list_audit(resource_kind="node", resource_id=node_id, limit=200)
    return {"node": node, "commands": list(commands), "entries": list(audit.entries)}


@page
async def node_page(request: Request, session: Session) -> Response:
    context = await call(node_detail, session.clients, request.path_params["node_id"])
    context["message"] = request.query_params.get("done", "")[:100]
    return render(request, "node.html", context, session=session)


def done(node_id: str, what: str) -> RedirectResponse:
    return RedirectResponse(f"/nodes/{node_id}?{urlencode({'done': what})}", status_code=303)


@change
async def uncordon(request: Request, session: Session, form: FormData) -> Response:
    node_id = request.path_params["node_id"]
    await call(session.clients.nodes.uncordon, node_id)
    return done(node_id, "Uncordoned")


@change
async def two_step(request: Request, session: Session, form: FormData) -> Response:
    """Step 1 (no `confirm_name`): the confirmation page. Step 2: act, if the name typed
    is the node's."""
    node_id = request.path_params["node_id"]
    action = request.path_params["action"]
    if action not in TWO_STEP:
        return Response("no such action", status_code=404)
    fields = {
        "reason": form_text(form, "reason", limit=500),
        "grace_seconds": form_text(form, "grace_seconds", limit=12),
        "image": form_text(form, "image", limit=512),
        "digest": form_text(form, "digest", limit=200),
    }
    if fields["grace_seconds"] and not fields["grace_seconds"].isdigit():
        message = "The drain deadline is a whole number of seconds."
        return render(
            request, "refused.html", {"message": message}, status_code=400, session=session
        )
    if "confirm_name" not in form or form_text(form, "confirm_name") != node_id:
        mistyped = "confirm_name" in form
        return render(
            request,
            "confirm.html",
            {
                "node_id": node_id,
                "action": action,
                "title": TWO_STEP[action],
                "fields": fields,
                "mistyped": mistyped,
            },
            status_code=422 if mistyped else 200,
            session=session,
        )
    await call(act, session.clients, node_id, action, fields)
    return done(node_id, TWO_STEP[action] + " done")


def act(clients: OperatorClients, node_id: str, action: str, fields: dict[str, str]) -> None:
    """Send the confirmed action; the plane validates every field and says what is wrong."""
    if action == "cordon":
        clients.nodes.cordon(node_id, reason=fields["reason"])
    elif action == "drain":
        grace = float(fields["grace_seconds"]) if fields["grace_seconds"].isdigit() else None
        clients.nodes.drain(node_id, reason=fields["reason"], grace_seconds=grace)
    else:
        clients.nodes.reimage(
            node_id, image=fields["image"], digest=fields["digest"], reason=fields["reason"]
        )


routes = [
    Route("/nodes", nodes_page),
    Route("/events/nodes", nodes_events),
    Route("/nodes/{node_id}", node_page),
    Route("/nodes/{node_id}/uncordon", uncordon, methods=["POST"]),
    Route("/nodes/{node_id}/{action}", two_step, methods=["POST"]),
]
