"""`pposctl policies|decisions|outbox`: governance policies, their decisions, the outbox."""

from __future__ import annotations

import argparse

from ppos.controlplane.cli.app import (
    Context,
    Tree,
    UsageError,
    confirm_reason,
    duration,
    enum_list,
    enum_parser,
    flatten,
    key_value,
    limit_flag,
    stdin_is_tty,
)
from ppos.controlplane.cli.governance import (
    GOVERNANCE_STATE,
    age,
    gov_state,
    load_message,
    reason_flag,
    version_flag,
)
from ppos.controlplane.cli.jobrefs import job_and_region, job_filter_flag, parse_job_ref
from ppos.controlplane.cli.output import Column, enum_name, when
from ppos.controlplane.client import NotFoundError
from ppos.controlplane.common.v1 import resource_pb2
from ppos.controlplane.governance.v1 import resources_pb2 as res

COMMAND_STATES = enum_list(res.CommandState, "COMMAND_STATE_")
ACTION_KIND = enum_parser(res.PolicyActionKind, "POLICY_ACTION_KIND_")


# -- policies and decisions ---------------------------------------------------------


def action_text(action: res.PolicyAction) -> str:
    name = enum_name(res.PolicyActionKind, action.kind, "POLICY_ACTION_KIND_").lower()
    params = ",".join(f"{k}={v}" for k, v in sorted(action.parameters.items()))
    return f"{name.replace('_', '-')}" + (f"({params})" if params else "")


POLICY_COLUMNS = [
    Column("POLICY", lambda p: p.policy_id),
    Column("TENANT", lambda p: p.spec.tenant_id or "(global)"),
    Column("TRIGGER", lambda p: gov_state(p.spec.trigger_state)),
    Column("ACTIONS", lambda p: " ".join(action_text(a) for a in p.spec.actions) or "-"),
    Column("ENABLED", lambda p: "yes" if p.spec.enabled else "dry-run only"),
    Column("AGE", age),
    Column("VERSION", lambda p: p.meta.resource_version, wide=True),
]


def action_kind(kind: int) -> str:
    return enum_name(res.PolicyActionKind, kind, "POLICY_ACTION_KIND_").lower()


def job_ref_text(job: resource_pb2.JobRef) -> str:
    return f"{job.region}/{job.job_id}@{job.revision}"


DECISION_COLUMNS = [
    Column("DECISION", lambda d: d.decision_id or "(dry run)"),
    Column("JOB", lambda d: job_ref_text(d.job)),
    Column("STATE", lambda d: gov_state(d.governance_state)),
    Column("POLICY", lambda d: d.policy_id or "-"),
    Column(
        "ACTIONS",
        lambda d: "; ".join(f"{action_kind(a.kind)} {a.target}" for a in d.actions) or "-",
    ),
    Column("AGE", lambda d: when(d.create_time)),
    Column("RATIONALE", lambda d: d.rationale or "-", wide=True),
    Column("PAYLOAD SHA-256", lambda d: d.canonical_payload_sha256.hex()[:16] or "-", wide=True),
]


def parse_action(text: str) -> res.PolicyAction:
    kind, _, params = text.partition(":")
    action = res.PolicyAction(kind=ACTION_KIND(kind))
    for item in filter(None, params.split(",")):
        key, value = key_value(item)
        action.parameters[key] = value
    return action


def action_arg(text: str) -> res.PolicyAction:
    try:
        return parse_action(text)
    except argparse.ArgumentTypeError:
        raise
    except ValueError as exc:  # pragma: no cover - enum parser raises ArgumentTypeError
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_policy_spec_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trigger",
        type=GOVERNANCE_STATE,
        default=None,
        metavar="STATE",
        help="governance state that triggers it, e.g. failed-runtime-environment",
    )
    parser.add_argument(
        "--action",
        type=action_arg,
        action="append",
        default=None,
        metavar="KIND[:K=V,...]",
        help="action, in order, e.g. reimage-node, retry-job, "
        "lower-queue-capacity:capacity_factor=0.5",
    )
    parser.add_argument("--tenant", default=None, help="tenant (default: global)")
    parser.add_argument(
        "--node-failure-threshold",
        type=int,
        default=None,
        metavar="N",
        help="failures on one node after which it is cordoned instead",
    )
    parser.add_argument(
        "--node-failure-window",
        type=duration,
        default=None,
        metavar="DURATION",
        help="the window in which --node-failure-threshold failures are counted",
    )
    parser.add_argument(
        "-f",
        "--file",
        default=None,
        metavar="FILE",
        help="the GovernancePolicySpec as JSON ('-' reads stdin)",
    )


def policy_spec(
    args: argparse.Namespace, base: res.GovernancePolicySpec | None
) -> res.GovernancePolicySpec:
    spec = res.GovernancePolicySpec()
    if base is not None:
        spec.CopyFrom(base)
    if args.file:
        spec = load_message(args.file, res.GovernancePolicySpec())
    if args.trigger is not None:
        spec.trigger_state = args.trigger
    if args.action is not None:
        del spec.actions[:]
        spec.actions.extend(args.action)
    if args.tenant is not None:
        spec.tenant_id = args.tenant
    if args.node_failure_threshold is not None:
        spec.node_failure_threshold = args.node_failure_threshold
    if args.node_failure_window is not None:
        spec.node_failure_window_seconds = int(args.node_failure_window)
    if getattr(args, "enabled", None) is not None:
        spec.enabled = args.enabled
    return spec


def policies_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_policies(tenant_id=args.tenant, limit=args.limit)
    ctx.out.show(reply, POLICY_COLUMNS, reply.policies, kind="policy", name=lambda p: p.policy_id)


def policies_get(ctx: Context, args: argparse.Namespace) -> None:
    policy = ctx.cp.governance.get_policy(args.policy_id)
    ctx.out.show(policy, POLICY_COLUMNS, [policy], kind="policy", name=lambda p: p.policy_id)


def policies_set(ctx: Context, args: argparse.Namespace) -> None:
    """Create the policy, or replace it at the version just read (or --expected-version)."""
    gov = ctx.cp.governance
    try:
        current: res.GovernancePolicy | None = gov.get_policy(args.policy_id)
    except NotFoundError:
        current = None
    spec = policy_spec(args, current.spec if current is not None else None)
    if current is None and not spec.trigger_state:
        raise UsageError("a new policy needs --trigger and --action (or -f FILE)")
    version = args.expected_version or (current.meta.resource_version if current else "")
    policy = gov.set_policy(args.policy_id, spec, expected_resource_version=version)
    ctx.out.done("policy", policy.policy_id, "configured" if current else "created", policy)


def policies_delete(ctx: Context, args: argparse.Namespace) -> None:
    gov = ctx.cp.governance
    version = args.expected_version or gov.get_policy(args.policy_id).meta.resource_version
    policy = gov.delete_policy(args.policy_id, expected_resource_version=version)
    ctx.out.done("policy", policy.policy_id, "deleted", policy)


def policies_enable(ctx: Context, args: argparse.Namespace) -> None:
    """Say how many already-synced jobs enabling will act on (the dry run's count), then enable."""
    gov = ctx.cp.governance
    current = gov.get_policy(args.policy_id)
    estimate = gov.dry_run_policy_reply(policy_id=args.policy_id, limit=1)
    capped = (
        " (the most one enable acts on)"
        if (estimate.backfill_jobs >= estimate.backfill_limit > 0)
        else ""
    )
    ctx.out.note(
        f"policy {args.policy_id} will act on {estimate.backfill_jobs} already-synced "
        f"job(s){capped}, then on every job synced from now on"
    )
    if not args.yes:
        if not stdin_is_tty():
            raise UsageError("not at a terminal: pass --yes to enable without asking")
        if input(f"enable policy {args.policy_id}? [y/N] ").strip().lower() not in ("y", "yes"):
            ctx.out.note("not enabled; nothing was changed")
            return
    spec = res.GovernancePolicySpec()
    spec.CopyFrom(current.spec)
    spec.enabled = True
    version = args.expected_version or current.meta.resource_version
    policy = gov.set_policy(args.policy_id, spec, expected_resource_version=version)
    ctx.out.done("policy", policy.policy_id, "enabled", policy)


def policies_dry_run(ctx: Context, args: argparse.Namespace) -> None:
    spec = None
    if args.file or args.trigger is not None or args.action is not None:
        base = ctx.cp.governance.get_policy(args.policy_id).spec if args.policy_id else None
        spec = policy_spec(args, base)
    elif not args.policy_id:
        raise UsageError("name a stored POLICY, or give a spec (--trigger/--action or -f FILE)")
    reply = ctx.cp.governance.dry_run_policy_reply(
        policy_id="" if spec is not None else args.policy_id,
        spec=spec,
        jobs=args.job or [],
        limit=args.limit,
    )
    ctx.out.show(reply, DECISION_COLUMNS, reply.decisions)
    if not ctx.out.is_json:
        ctx.out.note(
            f"dry run: {len(reply.decisions)} decision(s) would be made; nothing was changed"
        )
        if not args.job:
            ctx.out.note(
                f"enabling it would act on {reply.backfill_jobs} already-synced job(s) "
                f"(at most {reply.backfill_limit} per enable)"
            )


def decisions_list(ctx: Context, args: argparse.Namespace) -> None:
    job_id, region = job_and_region(args.job, args.region)
    reply = ctx.cp.governance.list_decisions(
        job_id=job_id, policy_id=args.policy, region=region, limit=args.limit
    )
    ctx.out.show(
        reply, DECISION_COLUMNS, reply.decisions, kind="decision", name=lambda d: d.decision_id
    )


# -- outbox -------------------------------------------------------------------------

OUTBOX_COLUMNS = [
    Column("COMMAND", lambda c: c.command_id),
    Column("TARGET", lambda c: c.target),
    Column("METHOD", lambda c: c.method.rsplit("/", 1)[-1] or "-"),
    Column("STATE", lambda c: enum_name(res.CommandState, c.state, "COMMAND_STATE_")),
    Column("ATTEMPTS", lambda c: str(c.attempts)),
    Column("AGE", lambda c: when(c.create_time)),
    Column("LAST ERROR", lambda c: c.last_error or "-", wide=True),
    Column("DECISION", lambda c: c.decision_id or "-", wide=True),
    Column("NEXT ATTEMPT", lambda c: when(c.next_attempt_time), wide=True),
]


def outbox_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_commands(
        states=flatten(args.state),
        target=args.target,
        decision_id=args.decision,
        limit=args.limit,
    )
    ctx.out.show(reply, OUTBOX_COLUMNS, reply.commands, kind="outbox", name=lambda c: c.command_id)


def outbox_retry(ctx: Context, args: argparse.Namespace) -> None:
    command = ctx.cp.governance.retry_command(args.command_id, reason=confirm_reason(args.reason))
    ctx.out.done("outbox", command.command_id, "queued for delivery again", command)


def outbox_get(ctx: Context, args: argparse.Namespace) -> None:
    command = ctx.cp.governance.get_command(args.command_id)
    if ctx.out.format in ("table", "wide"):
        ctx.out.table(OUTBOX_COLUMNS, [command])
        if command.request_json:
            ctx.out.console.print(f"\nRequest:\n{command.request_json}", markup=False)
        return
    ctx.out.show(command, OUTBOX_COLUMNS, [command], kind="outbox", name=lambda c: c.command_id)


def register(tree: Tree) -> None:
    policies = tree.noun(
        "policies", "governance policies: state -> actions, with dry runs", aliases=["policy"]
    )
    p = tree.verb(policies, "list", policies_list, "list policies", aliases=["ls"])
    p.add_argument("--tenant", default="", help="only this tenant's policies")
    limit_flag(p, "policies")
    p = tree.verb(policies, "get", policies_get, "show one policy")
    p.add_argument("policy_id", metavar="POLICY", help="policy id")
    p = tree.verb(
        policies,
        "set",
        policies_set,
        "create a policy, or change it at the version just read",
        aliases=["apply"],
        examples="  pposctl policies set fre-reimage --trigger failed-runtime-environment"
        " \\\n      --action reimage-node --action retry-job --enabled",
    )
    p.add_argument("policy_id", metavar="POLICY", help="policy id")
    add_policy_spec_flags(p)
    enabled = p.add_mutually_exclusive_group()
    enabled.add_argument(
        "--enabled",
        dest="enabled",
        action="store_true",
        default=None,
        help="the reconciler applies it",
    )
    enabled.add_argument(
        "--disabled",
        dest="enabled",
        action="store_false",
        help="dry runs only (the default for a new policy)",
    )
    version_flag(p)
    p = tree.verb(
        policies,
        "enable",
        policies_enable,
        "enable a policy, after showing how many already-synced jobs it will act on",
        examples="  pposctl policies enable fre-reimage\n"
        "  pposctl policies enable fre-reimage --yes",
    )
    p.add_argument("policy_id", metavar="POLICY", help="policy id")
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (for scripts); the count is printed"
    )
    version_flag(p)
    p = tree.verb(policies, "delete", policies_delete, "remove a policy")
    p.add_argument("policy_id", metavar="POLICY", help="policy id")
    version_flag(p)
    p = tree.verb(
        policies,
        "dry-run",
        policies_dry_run,
        "show the decisions a policy would make now, changing nothing",
        examples="  pposctl policies dry-run fre-reimage --limit 5\n"
        "  pposctl policies dry-run --trigger degraded "
        "--action lower-queue-capacity:capacity_factor=0.5\n"
        "  pposctl policies dry-run fre-reimage --job eu-west-1/job_1779116602472_1d246",
    )
    p.add_argument(
        "policy_id", metavar="POLICY", nargs="?", default="", help="a stored policy to try"
    )
    add_policy_spec_flags(p)
    p.add_argument(
        "--job",
        type=parse_job_ref,
        action="append",
        metavar="REGION/JOB[@REV]",
        help="evaluate against this synced job (repeatable; default: the latest of the trigger)",
    )
    p.add_argument(
        "--limit", type=int, default=0, metavar="N", help="jobs to evaluate (default 20)"
    )

    decisions = tree.noun(
        "decisions", "the reconciler's decisions, each citing its job", aliases=["decision"]
    )
    p = tree.verb(decisions, "list", decisions_list, "list decisions, newest first", aliases=["ls"])
    job_filter_flag(p, "only about this job")
    p.add_argument("--region", default="", help="only about jobs of this region")
    p.add_argument("--policy", default="", help="only of this policy")
    limit_flag(p, "decisions")

    outbox = tree.noun("outbox", "governance commands on their way to gateways and services")
    p = tree.verb(outbox, "list", outbox_list, "list outbox commands, newest first", aliases=["ls"])
    p.add_argument(
        "--state",
        type=COMMAND_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="pending, sent, acknowledged, failed",
    )
    p.add_argument("--decision", default="", help="only commands of this decision")
    p.add_argument(
        "--target", default="", help="only commands to this target, e.g. gateway:eu-west-1"
    )
    limit_flag(p, "commands")
    p = tree.verb(outbox, "get", outbox_get, "show one outbox command with its request")
    p.add_argument("command_id", metavar="COMMAND", help="outbox command id")
    p = tree.verb(
        outbox,
        "retry",
        outbox_retry,
        "deliver a FAILED command again, same idempotency key (reason required)",
    )
    p.add_argument("command_id", metavar="COMMAND", help="outbox command id")
    reason_flag(p)
