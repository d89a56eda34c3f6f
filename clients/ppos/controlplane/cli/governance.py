"""`pposctl tenants|queues|partners|routes`: the governed resources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from ppos.controlplane.cli.app import (
    Context,
    Tree,
    UsageError,
    confirm_reason,
    enum_list,
    enum_parser,
    flatten,
    key_value,
    limit_flag,
    request_id_flag,
)
from ppos.controlplane.cli.output import Column, enum_name, labels, when
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2

M = TypeVar("M", bound=Message)

GOVERNANCE_STATE = enum_parser(job_pb2.GovernanceState, "GOVERNANCE_STATE_")
GOVERNANCE_STATES = enum_list(job_pb2.GovernanceState, "GOVERNANCE_STATE_")
TENANT_PHASES = enum_list(res.TenantPhase, "TENANT_PHASE_")
QUEUE_STATE = enum_parser(res.QueueState, "QUEUE_STATE_")
QUEUE_STATES = enum_list(res.QueueState, "QUEUE_STATE_")
# The two priorities order different things, and the server keeps both orders:
# a queue's priority orders work between queues (higher first, FIFO within one);
# a route's priority orders the routes tried for a job (lower first).
QUEUE_PRIORITY_HELP = "order of the queue's work: HIGHER runs first, FIFO within a priority"
ROUTE_PRIORITY_HELP = "order in which routes are tried: LOWER is tried first"


def gov_state(value: int) -> str:
    return enum_name(job_pb2.GovernanceState, value, "GOVERNANCE_STATE_")


def load_message(path: str, message: M) -> M:
    """`-f FILE` (or `-f -` for stdin): a message in the proto3 JSON mapping."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise UsageError(f"{path}: not a {message.DESCRIPTOR.name} in JSON: {exc}") from None


def split_queue(text: str) -> tuple[str, str]:
    tenant, sep, queue = text.partition("/")
    if not sep or not tenant or not queue:
        raise UsageError(f"{text!r}: name a queue as TENANT/QUEUE")
    return tenant, queue


def age(item: Any) -> str:
    return when(item.meta.create_time)


# -- tenants ------------------------------------------------------------------------

TENANT_COLUMNS = [
    Column("TENANT", lambda t: t.tenant_id),
    Column("PHASE", lambda t: enum_name(res.TenantPhase, t.status.phase, "TENANT_PHASE_")),
    Column("DISPLAY NAME", lambda t: t.spec.display_name or "-"),
    Column("REGION", lambda t: t.spec.default_region or "-"),
    Column("PARTNER", lambda t: t.spec.default_partner_id or "-"),
    Column("AGE", age),
    Column("REASON", lambda t: t.status.reason or "-", wide=True),
    Column("VERSION", lambda t: t.meta.resource_version, wide=True),
    Column("LABELS", lambda t: labels(t.meta.labels), wide=True),
]


def parse_queue_template(text: str) -> pb.QueueTemplate:
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise argparse.ArgumentTypeError(f"{text!r} is not ID:REGION:CAPACITY[:PRIORITY]")
    try:
        capacity = int(parts[2])
        priority = int(parts[3]) if len(parts) == 4 else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: capacity and priority are numbers") from None
    return pb.QueueTemplate(
        queue_id=parts[0], spec=res.QueueSpec(region=parts[1], capacity=capacity, priority=priority)
    )


def tenants_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_tenants(
        phases=flatten(args.phase), label_selector=args.selector, limit=args.limit
    )
    ctx.out.show(reply, TENANT_COLUMNS, reply.tenants, kind="tenant", name=lambda t: t.tenant_id)


def tenants_get(ctx: Context, args: argparse.Namespace) -> None:
    tenant = ctx.cp.governance.get_tenant(args.tenant_id)
    ctx.out.show(tenant, TENANT_COLUMNS, [tenant], kind="tenant", name=lambda t: t.tenant_id)


def tenants_provision(ctx: Context, args: argparse.Namespace) -> None:
    if args.file:
        request = load_message(args.file, pb.ProvisionTenantRequest())
        if args.tenant_id:
            request.tenant_id = args.tenant_id
    else:
        if not args.tenant_id or not args.display_name or not args.default_region:
            raise UsageError("give TENANT, --display-name and --default-region (or -f FILE)")
        request = pb.ProvisionTenantRequest(
            tenant_id=args.tenant_id,
            spec=res.TenantSpec(
                display_name=args.display_name,
                default_region=args.default_region,
                default_partner_id=args.default_partner,
            ),
            queues=args.queue or [],
            labels=dict(args.label or []),
        )
    if args.request_id:
        request.request_id = args.request_id
    reply = ctx.cp.governance.provision_tenant_request(request)
    if ctx.out.is_json:
        ctx.out.message(reply)
        return
    verb = "unchanged (request id replayed)" if reply.replayed else "provisioned"
    ctx.out.done("tenant", reply.tenant.tenant_id, verb)
    for queue in reply.queues:
        ctx.out.done("queue", f"{queue.tenant_id}/{queue.queue_id}", verb)
    for route in reply.routes:
        ctx.out.done("route", route.route_id, verb)


def tenants_update(ctx: Context, args: argparse.Namespace) -> None:
    current = ctx.cp.governance.get_tenant(args.tenant_id)
    spec = res.TenantSpec()
    spec.CopyFrom(current.spec)
    if args.display_name is not None:
        spec.display_name = args.display_name
    if args.default_region is not None:
        spec.default_region = args.default_region
    if args.default_partner is not None:
        spec.default_partner_id = args.default_partner
    tenant = ctx.cp.governance.update_tenant(
        args.tenant_id,
        spec,
        expected_resource_version=args.expected_version or current.meta.resource_version,
    )
    ctx.out.done("tenant", tenant.tenant_id, "updated", tenant)


def tenants_suspend(ctx: Context, args: argparse.Namespace) -> None:
    tenant = ctx.cp.governance.suspend_tenant(
        args.tenant_id,
        reason=confirm_reason(args.reason),
        expected_resource_version=args.expected_version,
    )
    ctx.out.done("tenant", tenant.tenant_id, "suspended", tenant)


def tenants_resume(ctx: Context, args: argparse.Namespace) -> None:
    tenant = ctx.cp.governance.resume_tenant(
        args.tenant_id, expected_resource_version=args.expected_version
    )
    ctx.out.done("tenant", tenant.tenant_id, "resumed", tenant)


def tenants_retire(ctx: Context, args: argparse.Namespace) -> None:
    tenant = ctx.cp.governance.retire_tenant(
        args.tenant_id,
        reason=confirm_reason(args.reason),
        expected_resource_version=args.expected_version,
    )
    ctx.out.done("tenant", tenant.tenant_id, "retired", tenant)


# -- queues -------------------------------------------------------------------------

QUEUE_COLUMNS = [
    Column("QUEUE", lambda q: f"{q.tenant_id}/{q.queue_id}"),
    Column("REGION", lambda q: q.spec.region or "-"),
    Column(
        "STATE",  # as it is now: HELD while the gateway or a partner cannot be reached
        lambda q: enum_name(res.QueueState, q.status.state or q.spec.state, "QUEUE_STATE_"),
    ),
    Column("CAPACITY", lambda q: str(q.spec.capacity)),
    Column(
        "APPLIED",
        lambda q: (
            f"{enum_name(res.QueueState, q.status.applied_state, 'QUEUE_STATE_')}"
            f"/{q.status.applied_capacity}"
        ),
    ),
    Column("PRIORITY", lambda q: str(q.spec.priority)),
    Column("AGE", age),
    Column("REASON", lambda q: q.spec.reason or "-", wide=True),
    Column("VERSION", lambda q: q.meta.resource_version, wide=True),
]


def queue_name(queue: res.Queue) -> str:
    return f"{queue.tenant_id}/{queue.queue_id}"


def queues_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_queues(
        tenant_id=args.tenant, region=args.region, states=flatten(args.state), limit=args.limit
    )
    ctx.out.show(reply, QUEUE_COLUMNS, reply.queues, kind="queue", name=queue_name)


def queues_get(ctx: Context, args: argparse.Namespace) -> None:
    queue = ctx.cp.governance.get_queue(*split_queue(args.queue))
    ctx.out.show(queue, QUEUE_COLUMNS, [queue], kind="queue", name=queue_name)


def queues_create(ctx: Context, args: argparse.Namespace) -> None:
    tenant, queue_id = split_queue(args.queue)
    spec = res.QueueSpec(region=args.region, capacity=args.capacity, priority=args.priority)
    if args.state is not None:
        spec.state = args.state
    queue = ctx.cp.governance.create_queue(tenant, queue_id, spec, request_id=args.request_id)
    ctx.out.done("queue", queue_name(queue), "created", queue)


def _queue_version(ctx: Context, tenant: str, queue_id: str, given: str) -> str:
    return given or ctx.cp.governance.get_queue(tenant, queue_id).meta.resource_version


def queues_resize(ctx: Context, args: argparse.Namespace) -> None:
    tenant, queue_id = split_queue(args.queue)
    capacity = args.capacity
    if args.old_capacity is not None:  # `queues resize Q N`, the old spelling
        if capacity is not None and capacity != args.old_capacity:
            raise UsageError(f"two capacities: --capacity {capacity} and {args.old_capacity}")
        capacity = args.old_capacity
        ctx.out.note(
            f"warning: the capacity as an argument is deprecated; use --capacity {capacity}"
        )
    if capacity is None:
        raise UsageError("give the new capacity with --capacity N")
    queue = ctx.cp.governance.resize_queue(
        tenant,
        queue_id,
        capacity,
        reason=confirm_reason(args.reason),
        expected_resource_version=_queue_version(ctx, tenant, queue_id, args.expected_version),
    )
    ctx.out.done("queue", queue_name(queue), f"resized to {queue.spec.capacity}", queue)


def queues_state(ctx: Context, args: argparse.Namespace) -> None:
    tenant, queue_id = split_queue(args.queue)
    gov = ctx.cp.governance
    if args.verb == "pause":
        queue = gov.pause_queue(
            tenant,
            queue_id,
            reason=confirm_reason(args.reason),
            expected_resource_version=args.expected_version,
        )
    elif args.verb == "drain":
        queue = gov.drain_queue(
            tenant,
            queue_id,
            reason=confirm_reason(args.reason),
            expected_resource_version=args.expected_version,
        )
    else:
        queue = gov.resume_queue(tenant, queue_id, expected_resource_version=args.expected_version)
    verbs = {"pause": "paused", "drain": "draining", "resume": "resumed"}
    ctx.out.done("queue", queue_name(queue), verbs[args.verb], queue)


# -- partners and routes ------------------------------------------------------------

PARTNER_COLUMNS = [
    Column("PARTNER", lambda p: p.partner_id),
    Column("DISPLAY NAME", lambda p: p.display_name or "-"),
    Column("REGION", lambda p: p.region or "-"),
    Column("REVIEW", lambda p: "yes" if p.accepts_review else "no"),
    Column("AGE", age),
]

ROUTE_COLUMNS = [
    Column("ROUTE", lambda r: r.route_id),
    Column("TENANT", lambda r: r.spec.tenant_id),
    Column("QUEUE", lambda r: r.spec.queue_id or "*"),
    Column("PARTNER", lambda r: r.spec.partner_id),
    Column("PRIORITY", lambda r: str(r.spec.priority)),
    Column(
        "WHEN", lambda r: ",".join(gov_state(s) for s in r.spec.condition.governance_states) or "*"
    ),
    Column("FALLBACK", lambda r: r.spec.fallback_partner_id or "-"),
    Column("AGE", age),
    Column("SOURCE REGION", lambda r: r.spec.condition.source_region or "*", wide=True),
    Column("VERSION", lambda r: r.meta.resource_version, wide=True),
]


def partners_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_partners(limit=args.limit)
    ctx.out.show(
        reply, PARTNER_COLUMNS, reply.partners, kind="partner", name=lambda p: p.partner_id
    )


def partners_create(ctx: Context, args: argparse.Namespace) -> None:
    partner = ctx.cp.governance.create_partner(
        args.partner_id,
        display_name=args.display_name,
        region=args.region,
        accepts_review=args.accepts_review,
    )
    ctx.out.done("partner", partner.partner_id, "created", partner)


def add_route_flags(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    parser.add_argument("--tenant", default=None, help="tenant whose jobs are routed")
    parser.add_argument("--queue", default=None, help="only this queue (default: all)")
    parser.add_argument("--partner", default=None, help="receiving partner")
    parser.add_argument("--priority", type=int, default=None, help=ROUTE_PRIORITY_HELP)
    parser.add_argument(
        "--when-state",
        type=GOVERNANCE_STATES,
        action="append",
        default=None,
        metavar="STATE[,STATE]",
        help="only jobs in these governance states (e.g. completed-with-findings)",
    )
    parser.add_argument("--source-region", default=None, help="only jobs from this region")
    parser.add_argument(
        "--fallback",
        default=None,
        metavar="PARTNER",
        help="partner to fall back to when the receiver refuses",
    )
    if creating:
        parser.add_argument(
            "-f",
            "--file",
            default=None,
            metavar="FILE",
            help="the PartnerRouteSpec as JSON ('-' reads stdin)",
        )


def route_spec(
    args: argparse.Namespace, base: res.PartnerRouteSpec | None = None
) -> res.PartnerRouteSpec:
    spec = res.PartnerRouteSpec()
    if base is not None:
        spec.CopyFrom(base)
    if getattr(args, "file", None):
        spec = load_message(args.file, res.PartnerRouteSpec())
    for flag, field in (
        ("tenant", "tenant_id"),
        ("queue", "queue_id"),
        ("partner", "partner_id"),
        ("fallback", "fallback_partner_id"),
        ("priority", "priority"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(spec, field, value)
    if args.when_state is not None:
        del spec.condition.governance_states[:]
        spec.condition.governance_states.extend(flatten(args.when_state))
    if args.source_region is not None:
        spec.condition.source_region = args.source_region
    return spec


def routes_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_routes(
        tenant_id=args.tenant, partner_id=args.partner, limit=args.limit
    )
    ctx.out.show(reply, ROUTE_COLUMNS, reply.routes, kind="route", name=lambda r: r.route_id)


def routes_get(ctx: Context, args: argparse.Namespace) -> None:
    route = ctx.cp.governance.get_route(args.route_id)
    ctx.out.show(route, ROUTE_COLUMNS, [route], kind="route", name=lambda r: r.route_id)


def routes_create(ctx: Context, args: argparse.Namespace) -> None:
    spec = route_spec(args)
    if not args.file and (not spec.tenant_id or not spec.partner_id):
        raise UsageError("give --tenant and --partner (or -f FILE)")
    route = ctx.cp.governance.create_route(args.route_id, spec)
    ctx.out.done("route", route.route_id, "created", route)


def routes_update(ctx: Context, args: argparse.Namespace) -> None:
    current = ctx.cp.governance.get_route(args.route_id)
    route = ctx.cp.governance.update_route(
        args.route_id,
        route_spec(args, current.spec),
        expected_resource_version=args.expected_version or current.meta.resource_version,
    )
    ctx.out.done("route", route.route_id, "updated", route)


def routes_delete(ctx: Context, args: argparse.Namespace) -> None:
    version = (
        args.expected_version or ctx.cp.governance.get_route(args.route_id).meta.resource_version
    )
    route = ctx.cp.governance.delete_route(
        args.route_id, reason=confirm_reason(args.reason), expected_resource_version=version
    )
    ctx.out.done("route", route.route_id, "deleted", route)


# -- registration -------------------------------------------------------------------


def reason_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (kept in the audit log)")


def capacity_flag(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--capacity",
        type=int,
        required=required,
        default=None,
        metavar="N",
        help="concurrent job slots of the queue (1 to 100000)",
    )


def tenant_spec_flags(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument("--display-name", default=default, help="the tenant's name for people")
    parser.add_argument(
        "--default-region", default=default, help="region of the tenant's jobs by default"
    )
    parser.add_argument(
        "--default-partner", default=default, help="partner of the tenant's jobs by default"
    )


def version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expected-version",
        default="",
        metavar="RV",
        help="refuse if it changed since this resource version",
    )


def register(tree: Tree) -> None:
    tenants = tree.noun(
        "tenants", "tenants: provision, inspect, update, suspend, retire", aliases=["tenant"]
    )
    p = tree.verb(tenants, "list", tenants_list, "list tenants", aliases=["ls"])
    p.add_argument(
        "--phase",
        type=TENANT_PHASES,
        action="append",
        metavar="PHASE[,PHASE]",
        help="active, suspended, retired",
    )
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. tier=gold")
    limit_flag(p, "tenants")
    p = tree.verb(tenants, "get", tenants_get, "show one tenant")
    p.add_argument("tenant_id", metavar="TENANT", help="tenant id")
    p = tree.verb(
        tenants,
        "provision",
        tenants_provision,
        "create a tenant with its queues (repeat-safe with --request-id)",
        examples="  pposctl tenants provision acme --display-name 'ACME Print' \\\n"
        "      --default-region eu-west-1 --queue standard:eu-west-1:20\n"
        "  pposctl tenants provision -f acme.json",
    )
    p.add_argument("tenant_id", metavar="TENANT", nargs="?", default="", help="tenant id")
    tenant_spec_flags(p, default="")
    p.add_argument(
        "--queue",
        type=parse_queue_template,
        action="append",
        metavar="ID:REGION:CAPACITY[:PRIORITY]",
        help="a queue to create with it (repeatable; priority: higher runs first)",
    )
    p.add_argument(
        "-l",
        "--label",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a label of the tenant (repeatable)",
    )
    request_id_flag(p)
    p.add_argument(
        "-f",
        "--file",
        default=None,
        metavar="FILE",
        help="a ProvisionTenantRequest as JSON ('-' reads stdin)",
    )
    p = tree.verb(
        tenants,
        "update",
        tenants_update,
        "change a tenant's spec (read, change, write at that version)",
    )
    p.add_argument("tenant_id", metavar="TENANT", help="tenant id")
    tenant_spec_flags(p, default=None)
    version_flag(p)
    for verb, handler, helptext in (
        ("suspend", tenants_suspend, "hold a tenant's jobs (reason required)"),
        ("retire", tenants_retire, "retire a tenant for good (reason required)"),
    ):
        p = tree.verb(tenants, verb, handler, helptext)
        p.add_argument("tenant_id", metavar="TENANT", help="tenant id")
        reason_flag(p)
        version_flag(p)
    p = tree.verb(tenants, "resume", tenants_resume, "lift a suspension")
    p.add_argument("tenant_id", metavar="TENANT", help="tenant id")
    version_flag(p)

    queues = tree.noun("queues", "queues: capacity and admission state", aliases=["queue", "q"])
    p = tree.verb(queues, "list", queues_list, "list queues", aliases=["ls"])
    p.add_argument("--tenant", default="", help="only this tenant's queues")
    p.add_argument("--region", default="", help="only queues of this region")
    p.add_argument(
        "--state",
        type=QUEUE_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="active, paused, draining, held (gateway or partner unreachable)",
    )
    limit_flag(p, "queues")
    p = tree.verb(queues, "get", queues_get, "show one queue")
    p.add_argument("queue", metavar="TENANT/QUEUE", help="the queue")
    p = tree.verb(
        queues,
        "create",
        queues_create,
        "add a queue to a tenant",
        examples="  pposctl queues create acme/rush --region eu-west-1 --capacity 5 --priority 10",
    )
    p.add_argument("queue", metavar="TENANT/QUEUE", help="the new queue")
    p.add_argument("--region", required=True, help="region whose gateway runs the queue")
    capacity_flag(p, required=True)
    p.add_argument("--priority", type=int, default=0, help=f"{QUEUE_PRIORITY_HELP} (default 0)")
    p.add_argument("--state", type=QUEUE_STATE, default=None, help="active (default) or paused")
    request_id_flag(p)
    p = tree.verb(
        queues,
        "resize",
        queues_resize,
        "set a queue's capacity (reason required)",
        examples="  pposctl queues resize acme/standard --capacity 40 --reason 'peak season'",
    )
    p.add_argument("queue", metavar="TENANT/QUEUE", help="the queue")
    capacity_flag(p, required=False)
    # The old spelling `queues resize Q N`: hidden, still accepted, with a warning.
    p.add_argument("old_capacity", type=int, nargs="?", default=None, help=argparse.SUPPRESS)
    reason_flag(p)
    version_flag(p)
    for verb, helptext in (
        ("pause", "hold a queue's work (reason required)"),
        ("drain", "finish running work, accept none (reason required)"),
        ("resume", "make a paused or draining queue active"),
    ):
        p = tree.verb(queues, verb, queues_state, helptext)
        p.add_argument("queue", metavar="TENANT/QUEUE", help="the queue")
        if verb != "resume":
            reason_flag(p)
        version_flag(p)

    partners = tree.noun("partners", "partners that can receive jobs", aliases=["partner"])
    p = tree.verb(partners, "list", partners_list, "list partners", aliases=["ls"])
    limit_flag(p, "partners")
    p = tree.verb(partners, "create", partners_create, "register a partner")
    p.add_argument("partner_id", metavar="PARTNER", help="partner id")
    p.add_argument("--display-name", required=True, help="the partner's name for people")
    p.add_argument("--region", required=True, help="region whose gateway reaches the partner")
    p.add_argument("--accepts-review", action="store_true", help="takes jobs with findings")

    routes = tree.noun(
        "routes", "partner routes: which jobs go to which partner", aliases=["route"]
    )
    p = tree.verb(
        routes, "list", routes_list, "list routes (lower priority is tried first)", aliases=["ls"]
    )
    p.add_argument("--tenant", default="", help="only this tenant's routes")
    p.add_argument("--partner", default="", help="only routes to this partner")
    limit_flag(p, "routes")
    p = tree.verb(routes, "get", routes_get, "show one route")
    p.add_argument("route_id", metavar="ROUTE", help="route id")
    p = tree.verb(
        routes,
        "create",
        routes_create,
        "route a tenant's (or queue's) jobs",
        examples="  pposctl routes create acme-review --tenant acme --partner "
        "printhaus \\\n      --when-state completed-with-findings --priority 10",
    )
    p.add_argument("route_id", metavar="ROUTE", help="route id")
    add_route_flags(p, creating=True)
    p = tree.verb(routes, "update", routes_update, "change a route (read, change, write)")
    p.add_argument("route_id", metavar="ROUTE", help="route id")
    add_route_flags(p, creating=False)
    version_flag(p)
    p = tree.verb(routes, "delete", routes_delete, "remove a route (reason required)")
    p.add_argument("route_id", metavar="ROUTE", help="route id")
    reason_flag(p)
    version_flag(p)
