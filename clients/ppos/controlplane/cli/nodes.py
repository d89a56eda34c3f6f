"""`pposctl nodes|commands|enrollments|versions`: the node registry."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.app import (
    Context,
    Tree,
    UsageError,
    confirm_reason,
    duration,
    enum_list,
    flatten,
    key_value,
    limit_flag,
    old_spelling,
    request_id_flag,
)
from ppos.controlplane.cli.output import Column, enum_name, labels, timestamp, when
from ppos.controlplane.cli.watching import watch_nodes
from ppos.controlplane.client.node_registry import node_filter
from ppos.controlplane.common.v1 import resource_pb2
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb

TERMINAL_COMMAND_STATES = {
    node_pb2.NODE_COMMAND_STATE_SUCCEEDED,
    node_pb2.NODE_COMMAND_STATE_FAILED,
    node_pb2.NODE_COMMAND_STATE_TIMED_OUT,
    node_pb2.NODE_COMMAND_STATE_CANCELLED,
}


def readiness(node: node_pb2.Node) -> str:
    return enum_name(node_pb2.Readiness, node.status.readiness, "READINESS_")


def node_status(node: node_pb2.Node) -> str:
    """`READY`, `READY,Cordoned` (kubectl's `Ready,SchedulingDisabled`)."""
    text = readiness(node)
    return text if node.spec.schedulable else f"{text},Cordoned"


def slots(node: node_pb2.Node) -> str:
    return f"{node.status.slots_in_use}/{node.spec.capacity_slots}"


NODE_COLUMNS = [
    Column("NODE", lambda n: n.node_id),
    Column("REGION", lambda n: n.spec.region or "-"),
    Column("CLUSTER", lambda n: n.spec.cluster or "-"),
    Column("STATUS", node_status),
    Column("IMAGE", lambda n: n.status.container.image or "-"),
    Column("SLOTS", slots),
    Column("HEARTBEAT", lambda n: when(n.status.last_heartbeat_time)),
    Column("AGE", lambda n: when(n.meta.create_time)),
    Column("DIGEST", lambda n: n.status.container.digest or "-", wide=True),
    Column("REASON", lambda n: n.status.readiness_reason or "-", wide=True),
    Column("VERSION", lambda n: n.meta.resource_version, wide=True),
    Column("LABELS", lambda n: labels(n.meta.labels), wide=True),
]


def command_state(command: node_pb2.NodeCommand) -> str:
    return enum_name(node_pb2.NodeCommandState, command.state, "NODE_COMMAND_STATE_")


COMMAND_COLUMNS = [
    Column("COMMAND", lambda c: c.command_id),
    Column("NODE", lambda c: c.node_id),
    Column("KIND", lambda c: enum_name(node_pb2.NodeCommandKind, c.kind, "NODE_COMMAND_KIND_")),
    Column("STATE", command_state),
    Column("TARGET", lambda c: c.reimage.target.image or "-"),
    Column("DELIVERIES", lambda c: str(c.delivery_count)),
    Column("AGE", lambda c: when(c.create_time)),
    Column("REASON", lambda c: c.reason, wide=True),
    Column("BY", lambda c: f"{c.issued_by.kind}:{c.issued_by.name}", wide=True),
    Column("DEADLINE", lambda c: timestamp(c.deadline), wide=True),
    Column("DELIVERED", lambda c: timestamp(c.deliver_time), wide=True),
    Column("FINISHED", lambda c: timestamp(c.finish_time), wide=True),
    Column("RESULT", lambda c: c.result_message or "-", wide=True),
]

VERSION_COLUMNS = [
    Column("REGION", lambda v: v.region),
    Column("IMAGE", lambda v: v.container.image or "-"),
    Column("DIGEST", lambda v: v.container.digest or "-"),
    Column("NODES", lambda v: str(v.node_count)),
    Column("READY", lambda v: str(v.ready_count)),
]


def enrollment_state(enrollment: pb.Enrollment) -> str:
    return enum_name(pb.EnrollmentState, enrollment.state, "ENROLLMENT_STATE_")


ENROLLMENT_COLUMNS = [
    Column("ENROLLMENT", lambda e: e.enrollment_id),
    Column("REGION", lambda e: e.region),
    Column("CLUSTER", lambda e: e.cluster or "-"),
    Column("STATE", enrollment_state),
    Column("NODE", lambda e: e.node_id or "-"),
    Column("EXPIRES", lambda e: timestamp(e.expire_time)),
    Column("AGE", lambda e: when(e.create_time)),
    Column("BY", lambda e: e.created_by, wide=True),
    Column("LABELS", lambda e: labels(e.labels), wide=True),
    Column("REDEEMED", lambda e: timestamp(e.redeem_time), wide=True),
    Column("REVOKED", lambda e: timestamp(e.revoke_time), wide=True),
    Column("REVOKE REASON", lambda e: e.revoke_reason or "-", wide=True),
]

READINESS = enum_list(node_pb2.Readiness, "READINESS_")
ENROLLMENT_STATES = enum_list(pb.EnrollmentState, "ENROLLMENT_STATE_")
COMMAND_STATES = enum_list(node_pb2.NodeCommandState, "NODE_COMMAND_STATE_")


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", default="", help="only nodes of this region")
    parser.add_argument("--cluster", default="", help="only nodes of this cluster")
    parser.add_argument(
        "--readiness",
        type=READINESS,
        action="append",
        metavar="STATE[,STATE]",
        help="only nodes in these states (ready, not-ready, draining, reimaging, lost)",
    )
    parser.add_argument("--image", default="", help="only nodes running this image (exact)")
    parser.add_argument(
        "-l", "--selector", default="", help="label selector, for example gpu=true,tier!=edge"
    )


def filter_from(args: argparse.Namespace) -> node_pb2.NodeFilter:
    return node_filter(
        region=args.region,
        cluster=args.cluster,
        readiness=flatten(args.readiness),
        container_image=args.image,
        label_selector=args.selector,
    )


# -- nodes ------------------------------------------------------------------------


def nodes_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.nodes.list_nodes(filter_from(args), page_size=args.page_size, limit=args.limit)
    ctx.out.show(reply, NODE_COLUMNS, reply.nodes, kind="node", name=lambda n: n.node_id)


def nodes_get(ctx: Context, args: argparse.Namespace) -> None:
    nodes = [ctx.cp.nodes.get_node(node_id) for node_id in args.node_ids]
    if ctx.out.is_json:
        if len(nodes) == 1:
            ctx.out.message(nodes[0])
        else:
            ctx.out.message(pb.ListNodesResponse(nodes=nodes))
        return
    ctx.out.show(nodes[0], NODE_COLUMNS, nodes, kind="node", name=lambda n: n.node_id)


def nodes_describe(ctx: Context, args: argparse.Namespace) -> None:
    node = ctx.cp.nodes.get_node(args.node_id)
    if ctx.out.is_json:
        ctx.out.message(node)
        return
    spec, status = node.spec, node.status
    ctx.out.details(
        [
            ("Node", node.node_id),
            ("Region", spec.region or "-"),
            ("Cluster", spec.cluster or "-"),
            ("Labels", labels(node.meta.labels)),
            ("Readiness", f"{readiness(node)} ({status.readiness_reason or '-'})"),
            ("Since", timestamp(status.last_transition_time)),
            ("Schedulable", "yes" if spec.schedulable else f"no ({spec.unschedulable_reason})"),
            ("Drain deadline", timestamp(spec.drain_deadline)),
            ("Image", status.container.image or "-"),
            ("Digest", status.container.digest or "-"),
            ("Slots", slots(node)),
            ("Last heartbeat", f"{timestamp(status.last_heartbeat_time)}"),
            ("Credential generation", str(status.credential_generation)),
            ("Resource version", node.meta.resource_version),
            ("Created", timestamp(node.meta.create_time)),
        ]
    )
    if status.conditions:
        ctx.out.console.print("\nConditions:")
        ctx.out.table(
            [
                Column("TYPE", lambda c: c.type),
                Column(
                    "STATUS",
                    lambda c: enum_name(
                        resource_pb2.ConditionStatus, c.status, "CONDITION_STATUS_"
                    ),
                ),
                Column("REASON", lambda c: c.reason or "-"),
                Column("SINCE", lambda c: when(c.last_transition_time)),
                Column("MESSAGE", lambda c: c.message or "-"),
            ],
            status.conditions,
        )


def nodes_cordon(ctx: Context, args: argparse.Namespace) -> None:
    node = ctx.cp.nodes.cordon(
        args.node_id,
        reason=confirm_reason(args.reason),
        expected_resource_version=args.expected_version,
    )
    ctx.out.done("node", node.node_id, "cordoned", node)


def nodes_uncordon(ctx: Context, args: argparse.Namespace) -> None:
    node = ctx.cp.nodes.uncordon(args.node_id, expected_resource_version=args.expected_version)
    ctx.out.done("node", node.node_id, "uncordoned", node)


def nodes_drain(ctx: Context, args: argparse.Namespace) -> None:
    node = ctx.cp.nodes.drain(
        args.node_id,
        reason=confirm_reason(args.reason),
        grace_seconds=args.deadline,
        expected_resource_version=args.expected_version,
    )
    ctx.out.done("node", node.node_id, "draining", node)
    if not ctx.out.is_json and node.spec.drain_deadline.seconds:
        ctx.out.note(f"running work must finish by {timestamp(node.spec.drain_deadline)}")


def nodes_reimage(ctx: Context, args: argparse.Namespace) -> int | None:
    reply = ctx.cp.nodes.reimage(
        args.node_id,
        image=args.image,
        digest=args.digest,
        reason=confirm_reason(args.reason),
        idempotency_key=args.request_id,
        timeout_seconds=args.deadline,
    )
    command = reply.command
    if reply.duplicate and not ctx.out.is_json:
        ctx.out.note(f"idempotency key already used: command {command.command_id} (no new one)")
    if args.wait:
        return wait_for_command(ctx, command.command_id, args.poll)
    ctx.out.done("command", command.command_id, "created", command)
    return None


def nodes_sweep(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.nodes.run_health_sweep()
    if ctx.out.is_json:
        ctx.out.message(reply)
        return
    seconds = reply.duration.seconds + reply.duration.nanos / 1e9
    ctx.out.details(
        [
            ("Swept at", timestamp(reply.sweep_time)),
            ("Marked NOT_READY", str(reply.marked_not_ready)),
            ("Marked LOST", str(reply.marked_lost)),
            ("Commands timed out", str(reply.commands_timed_out)),
            ("Drains expired", str(reply.drains_expired)),
            ("Resource version", str(reply.resource_version)),
            ("Took", f"{seconds * 1000:.1f}ms"),
        ]
    )


def nodes_watch(ctx: Context, args: argparse.Namespace) -> int:
    return watch_nodes(
        ctx,
        filter_from(args),
        resume_from=args.after,
        max_events=args.max_events,
        duration_seconds=args.duration,
        columns=NODE_COLUMNS,
    )


# -- node commands ----------------------------------------------------------------


def wait_for_command(ctx: Context, command_id: str, poll: float) -> int:
    """Follow a node command until it ends; exit 0 only when it SUCCEEDED."""
    last = None
    with ctx.out.err.status(f"waiting for command {command_id}") as status:
        while True:
            command = ctx.cp.nodes.get_command(command_id)
            state = command_state(command)
            if state != last:
                status.update(f"command {command_id}: {state}")
                last = state
            if command.state in TERMINAL_COMMAND_STATES:
                break
            time.sleep(poll)
    ctx.out.done("command", command.command_id, state.lower().replace("_", "-"), command)
    if command.result_message and not ctx.out.is_json:
        ctx.out.note(command.result_message)
    if command.state == node_pb2.NODE_COMMAND_STATE_SUCCEEDED:
        return exitcodes.OK
    return exitcodes.OPERATION_FAILED


def commands_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.nodes.list_commands(
        node_id=args.node, states=flatten(args.state), page_size=args.page_size, limit=args.limit
    )
    ctx.out.show(
        reply, COMMAND_COLUMNS, reply.commands, kind="command", name=lambda c: c.command_id
    )


def commands_get(ctx: Context, args: argparse.Namespace) -> None:
    command = ctx.cp.nodes.get_command(args.command_id)
    ctx.out.show(command, COMMAND_COLUMNS, [command], kind="command", name=lambda c: c.command_id)


def commands_cancel(ctx: Context, args: argparse.Namespace) -> None:
    command = ctx.cp.nodes.cancel_command(args.command_id, reason=confirm_reason(args.reason))
    ctx.out.done("command", command.command_id, "cancelled", command)


def commands_wait(ctx: Context, args: argparse.Namespace) -> int:
    return wait_for_command(ctx, args.command_id, args.poll)


# -- enrollments and versions -----------------------------------------------------


def enrollments_create(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.nodes.create_enrollment(
        args.region,
        cluster=args.cluster,
        labels=dict(args.label or []),
        ttl_seconds=args.ttl,
        request_id=args.request_id,
    )
    if args.token_out is not None:
        write_secret(args.token_out, reply.enrollment_token)
        reply.enrollment_token = ""  # written to the file; not echoed
    if ctx.out.is_json:
        ctx.out.message(reply)
        return
    pairs = [("Enrollment", reply.enrollment_id), ("Expires", timestamp(reply.expire_time))]
    if args.token_out is not None:
        pairs.append(("Token", f"written to {args.token_out} (mode 0600)"))
    else:
        pairs.append(("Token", reply.enrollment_token))
    ctx.out.details(pairs)
    if args.token_out is None:
        ctx.out.note(
            "the token is shown once: hand it to the node, which redeems it with EnrollNode"
        )


def enrollments_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.nodes.list_enrollments(
        region=args.region, states=flatten(args.state), page_size=args.page_size, limit=args.limit
    )
    ctx.out.show(
        reply,
        ENROLLMENT_COLUMNS,
        reply.enrollments,
        kind="enrollment",
        name=lambda e: e.enrollment_id,
    )


def enrollments_revoke(ctx: Context, args: argparse.Namespace) -> None:
    enrollment = ctx.cp.nodes.revoke_enrollment(
        args.enrollment_id, reason=confirm_reason(args.reason)
    )
    ctx.out.done("enrollment", enrollment.enrollment_id, "revoked", enrollment)


def write_secret(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; remove it or choose another file") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def versions_rollup(ctx: Context, args: argparse.Namespace) -> None:
    versions = ctx.cp.nodes.version_rollup(getattr(args, "region", "") or "")
    reply = pb.GetVersionRollupResponse(versions=versions)
    ctx.out.show(reply, VERSION_COLUMNS, versions)


# -- registration -----------------------------------------------------------------


def register(tree: Tree) -> None:
    nodes = tree.noun(
        "nodes",
        "worker nodes: list, inspect, cordon, drain, re-image, watch",
        aliases=["node", "no"],
    )
    p = tree.verb(
        nodes,
        "list",
        nodes_list,
        "list nodes (all pages)",
        aliases=["ls"],
        examples="  pposctl nodes list --region eu-west-1 --readiness not-ready,lost\n"
        "  pposctl nodes list -l gpu=true -o json | jq '.nodes[].nodeId'",
    )
    add_filter_flags(p)
    limit_flag(p, "nodes")
    page_size_flag(p)
    p = tree.verb(nodes, "get", nodes_get, "show one or more nodes")
    p.add_argument("node_ids", nargs="+", metavar="NODE", help="node ids")
    p = tree.verb(nodes, "describe", nodes_describe, "show a node in detail, with conditions")
    p.add_argument("node_id", metavar="NODE", help="node id")
    for verb, handler, helptext in (
        ("cordon", nodes_cordon, "stop scheduling new work on a node (reason required)"),
        ("drain", nodes_drain, "cordon a node and let running work finish (reason required)"),
    ):
        p = tree.verb(
            nodes,
            verb,
            handler,
            helptext,
            examples=f"  pposctl nodes {verb} NODE --reason 'disk errors on sdb'",
        )
        p.add_argument("node_id", metavar="NODE", help="node id")
        p.add_argument("--reason", required=True, help="why (kept in the audit log)")
        node_version_flag(p)
        if verb == "drain":
            deadline_flag(p, "time running work gets to finish (default 10m)")
            old_spelling(p, "--grace", "--deadline", dest="deadline", type=duration)
    p = tree.verb(nodes, "uncordon", nodes_uncordon, "make a node schedulable again")
    p.add_argument("node_id", metavar="NODE", help="node id")
    node_version_flag(p)
    p = tree.verb(
        nodes,
        "reimage",
        nodes_reimage,
        "re-image a node to a container version (reason required)",
        examples="  pposctl nodes reimage NODE --image reg/ppos/worker:7.4.2 \\\n"
        "      --digest sha256:... --reason 'engine crash loop' --wait",
    )
    p.add_argument("node_id", metavar="NODE", help="node id")
    p.add_argument("--image", required=True, help="target image reference")
    p.add_argument("--digest", required=True, help="target digest, sha256:<64 hex>")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    request_id_flag(p, "repeat-safe id: the same id returns the same command")
    old_spelling(p, "--idempotency-key", "--request-id", dest="request_id")
    deadline_flag(p, "time the node gets to finish the re-image (default 30m)")
    p.add_argument("--wait", action="store_true", help="follow the command until it ends")
    poll_flag(p)
    tree.verb(nodes, "sweep", nodes_sweep, "run a health sweep now (stale heartbeats)")
    p = tree.verb(
        nodes,
        "watch",
        nodes_watch,
        "live view of nodes (snapshot, then changes; resumes after reconnects)",
        examples="  pposctl nodes watch --region eu-west-1\n"
        "  pposctl nodes watch -o json --max-events 10   # JSON lines",
    )
    add_filter_flags(p)
    p.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="RV",
        help="resume after this resource version instead of a snapshot",
    )
    old_spelling(p, "--resume-from", "--after", dest="after", type=int)
    p.add_argument(
        "--max-events",
        type=int,
        default=0,
        metavar="N",
        help="stop after N events (bookmarks not counted)",
    )
    p.add_argument(
        "--duration", type=duration, default=None, metavar="DURATION", help="stop after this long"
    )

    commands = tree.noun(
        "commands",
        "commands sent to nodes (re-images) and their lifecycle",
        aliases=["command", "cmd"],
    )
    p = tree.verb(
        commands, "list", commands_list, "list node commands, newest first", aliases=["ls"]
    )
    p.add_argument("--node", default="", help="only this node's commands")
    p.add_argument(
        "--state",
        type=COMMAND_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="pending, delivered, acknowledged, succeeded, failed, timed-out, cancelled",
    )
    limit_flag(p, "commands")
    page_size_flag(p)
    p = tree.verb(commands, "get", commands_get, "show one command")
    p.add_argument("command_id", metavar="COMMAND", help="command id")
    p = tree.verb(commands, "cancel", commands_cancel, "cancel a command the node has not finished")
    p.add_argument("command_id", metavar="COMMAND", help="command id")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p = tree.verb(
        commands,
        "wait",
        commands_wait,
        "wait until a command ends (exit 0 when it succeeded, 14 otherwise)",
    )
    p.add_argument("command_id", metavar="COMMAND", help="command id")
    poll_flag(p)

    enrollments = tree.noun(
        "enrollments", "approve new nodes (one-time enrollment tokens)", aliases=["enrollment"]
    )
    p = tree.verb(
        enrollments,
        "create",
        enrollments_create,
        "approve one node's enrollment and print its one-time token",
        examples="  pposctl enrollments create --region eu-west-1 --cluster c1 \\\n"
        "      -l gpu=true --token-out node-7.enroll",
    )
    p.add_argument("--region", required=True, help="region the node will serve")
    p.add_argument("--cluster", default="", help="cluster the node will join")
    p.add_argument(
        "-l",
        "--label",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a label the node will carry (repeatable)",
    )
    p.add_argument(
        "--ttl", type=duration, default=None, metavar="DURATION", help="token validity (default 1h)"
    )
    request_id_flag(p, "repeat-safe id (re-issues the token)")
    p.add_argument(
        "--token-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the token to a new 0600 file instead of printing it",
    )

    p = tree.verb(
        enrollments,
        "list",
        enrollments_list,
        "list enrollments, newest first (never their tokens)",
        aliases=["ls"],
        examples="  pposctl enrollments list --state issued\n"
        "  pposctl enrollments list --region eu-west-1 --state redeemed,expired -o wide",
    )
    p.add_argument("--region", default="", help="only enrollments of this region")
    p.add_argument(
        "--state",
        type=ENROLLMENT_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="issued, redeemed, expired, revoked",
    )
    limit_flag(p, "enrollments")
    page_size_flag(p)
    p = tree.verb(
        enrollments,
        "revoke",
        enrollments_revoke,
        "withdraw an enrollment no node has redeemed (reason required)",
        examples="  pposctl enrollments revoke enr_... --reason 'token sent to the wrong host'",
    )
    p.add_argument("enrollment_id", metavar="ENROLLMENT", help="enrollment id")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")

    versions = tree.noun(
        "versions",
        "container versions per region (rollup)",
        default=versions_rollup,
    )
    p = tree.verb(versions, "rollup", versions_rollup, "nodes per region and container version")
    for parser in (p, versions_parser(tree)):
        parser.add_argument("--region", default="", help="only this region")


def node_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expected-version",
        default="",
        metavar="RV",
        help="refuse if the node changed since this resource version",
    )


def deadline_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """`--deadline DURATION`: how long work on a node gets (drain and re-image alike)."""
    parser.add_argument("--deadline", type=duration, default=None, metavar="DURATION", help=what)


def poll_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll",
        type=duration,
        default=1.0,
        metavar="DURATION",
        help="how often to check while waiting (default 1s)",
    )


def page_size_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--page-size", type=int, default=0, metavar="N", help="items per call (default: server's)"
    )


def versions_parser(tree: Tree) -> argparse.ArgumentParser:
    """The `versions` noun itself (`pposctl versions` = `pposctl versions rollup`)."""
    parser: argparse.ArgumentParser = tree.root.choices["versions"]
    return parser
