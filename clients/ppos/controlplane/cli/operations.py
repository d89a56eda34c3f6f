"""`pposctl admin-jobs|audit|sync`: long-running work, the audit log, registry sync."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from ppos.controlplane.cli import exitcodes
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
    old_spelling,
    request_id_flag,
)
from ppos.controlplane.cli.governance import GOVERNANCE_STATES, gov_state, reason_flag
from ppos.controlplane.cli.jobrefs import job_and_region, job_filter, job_filter_flag, parse_job_ref
from ppos.controlplane.cli.mirror import add_verify_verb
from ppos.controlplane.cli.output import Column, enum_name, human_bytes, span, timestamp, when
from ppos.controlplane.cli.progress import (
    finish_admin_job,
    finish_sweep,
    follow_admin_job,
    follow_sweep,
    job_kind,
    job_state,
    sweep_state,
)
from ppos.controlplane.cli.sync_leader import leader_line, recent_runtime_failures
from ppos.controlplane.cli.watching import follow
from ppos.controlplane.client import Stream
from ppos.controlplane.common.v1 import resource_pb2
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.preflight.v1 import job_pb2

ADMIN_JOB_KIND = enum_parser(res.AdminJobKind, "ADMIN_JOB_KIND_")
ADMIN_JOB_KINDS = enum_list(res.AdminJobKind, "ADMIN_JOB_KIND_")
ADMIN_JOB_STATES = enum_list(res.AdminJobState, "ADMIN_JOB_STATE_")
SWEEP_STATES = enum_list(pb.SweepState, "SWEEP_STATE_")

# -- admin jobs ---------------------------------------------------------------------

ADMIN_JOB_COLUMNS = [
    Column("JOB", lambda j: j.admin_job_id),
    Column("KIND", job_kind),
    Column("STATE", job_state),
    Column("PROGRESS", lambda j: f"{j.progress.done}/{j.progress.total or '?'}"),
    Column("MESSAGE", lambda j: j.progress.message or "-"),
    Column("BY", lambda j: j.started_by.name or "-"),
    Column("AGE", lambda j: when(j.create_time)),
    Column(
        "PARAMETERS",
        lambda j: ",".join(f"{k}={v}" for k, v in sorted(j.parameters.items())) or "-",
        wide=True,
    ),
    Column("ERROR", lambda j: j.error or "-", wide=True),
]


def admin_jobs_start(ctx: Context, args: argparse.Namespace) -> int:
    job = ctx.cp.governance.start_admin_job(
        args.kind, parameters=dict(args.param or []), request_id=args.request_id
    )
    if args.detach:
        ctx.out.done("admin-job", job.admin_job_id, "started", job)
        return exitcodes.OK
    return _follow_job(ctx, job.admin_job_id, json_lines=False)


def _follow_job(ctx: Context, admin_job_id: str, *, json_lines: bool) -> int:
    stream = ctx.cp.governance.watch_admin_job(admin_job_id)
    with stream:
        return follow_admin_job(ctx, (m.job for m in stream), json_lines=json_lines)


def admin_jobs_watch(ctx: Context, args: argparse.Namespace) -> int:
    return _follow_job(ctx, args.admin_job_id, json_lines=ctx.out.is_json)


def admin_jobs_get(ctx: Context, args: argparse.Namespace) -> None:
    job = ctx.cp.governance.get_admin_job(args.admin_job_id)
    ctx.out.show(job, ADMIN_JOB_COLUMNS, [job], kind="admin-job", name=lambda j: j.admin_job_id)
    if ctx.out.format in ("table", "wide") and job.result_json:
        ctx.out.note(f"result: {job.result_json}")


def admin_jobs_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_admin_jobs(
        kinds=flatten(args.kind), states=flatten(args.state), limit=args.limit
    )
    ctx.out.show(
        reply, ADMIN_JOB_COLUMNS, reply.jobs, kind="admin-job", name=lambda j: j.admin_job_id
    )


def admin_jobs_cancel(ctx: Context, args: argparse.Namespace) -> int | None:
    job = ctx.cp.governance.cancel_admin_job(args.admin_job_id, reason=confirm_reason(args.reason))
    if args.wait:
        return _follow_job(ctx, job.admin_job_id, json_lines=False)
    ctx.out.done("admin-job", job.admin_job_id, job_state(job).lower(), job)
    return None


def admin_jobs_wait(ctx: Context, args: argparse.Namespace) -> int:
    job = ctx.cp.governance.get_admin_job(args.admin_job_id)
    if job.state in (
        res.ADMIN_JOB_STATE_SUCCEEDED,
        res.ADMIN_JOB_STATE_FAILED,
        res.ADMIN_JOB_STATE_CANCELLED,
    ):
        return finish_admin_job(ctx, job)
    return _follow_job(ctx, args.admin_job_id, json_lines=False)


# -- audit --------------------------------------------------------------------------

AUDIT_COLUMNS = [
    Column("ID", lambda e: str(e.audit_id)),
    Column("TIME", lambda e: timestamp(e.create_time)),
    Column("ACTOR", lambda e: f"{e.actor.kind}:{e.actor.name}"),
    Column("METHOD", lambda e: e.method.rsplit("/", 1)[-1] or "-"),
    Column("RESOURCE", lambda e: f"{e.resource_kind}/{e.resource_id}"),
    Column("REASON", lambda e: e.reason or "-"),
    Column("REQUEST", lambda e: e.request_id or "-"),
    Column("SERVICE", lambda e: e.service or "-", wide=True),
    Column("AFTER", lambda e: e.after_json or "-", wide=True),
]


def audit_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.governance.list_audit(
        after_audit_id=args.after,
        resource_kind=args.kind,
        resource_id=args.resource,
        limit=args.limit,
    )
    ctx.out.show(reply, AUDIT_COLUMNS, reply.entries, kind="audit", name=lambda e: str(e.audit_id))
    if reply.has_more and not ctx.out.is_json and reply.entries:
        ctx.out.note(f"more entries follow: --after {reply.entries[-1].audit_id}")


def audit_watch(ctx: Context, args: argparse.Namespace) -> int:
    after = args.after
    shown = [c for c in AUDIT_COLUMNS if not c.wide]

    def opened() -> Stream[gov_pb.WatchAuditEntriesResponse]:
        return ctx.cp.governance.watch_audit(after_audit_id=after, resource_kind=args.kind)

    def seen(message: gov_pb.WatchAuditEntriesResponse) -> None:
        nonlocal after
        after = max(after, message.entry.audit_id)  # reconnects resume after it

    def show(message: gov_pb.WatchAuditEntriesResponse) -> None:
        cells = "   ".join(c.cell(message.entry) for c in shown)
        ctx.out.console.print(cells, markup=False, highlight=False)

    return follow(
        ctx,
        opened,
        show=show,
        on_message=seen,
        max_messages=args.max_events,
        duration_seconds=args.duration,
    )


# -- registry sync ------------------------------------------------------------------


def lag_age(status: pb.RegionSyncStatus) -> str:
    """Age of the oldest unsynced change: `0s` when caught up, `-` when not known."""
    if not status.HasField("lag"):
        return "-"
    return span(status.lag) if status.lag.seconds or status.lag.nanos else "0s"


STATUS_COLUMNS = [
    Column("REGION", lambda s: s.region),
    Column("LAG", lambda s: str(s.lag_changes)),
    Column("LAG AGE", lambda s: lag_age(s)),
    Column("LAST SUCCESS", lambda s: when(s.last_success_time)),
    Column("RECORDS", lambda s: str(s.records_synced)),
    Column("BYTES", lambda s: human_bytes(s.bytes_synced)),
    Column("QUARANTINED", lambda s: str(s.quarantined_count)),
    Column("SWEEPING", lambda s: "yes" if s.sweeping else "no"),
    Column("ERROR", lambda s: s.last_error or "-"),
    Column("CURSOR", lambda s: s.cursor or "-", wide=True),
    Column("HEAD", lambda s: s.head_cursor or "-", wide=True),
    Column("PAGES", lambda s: str(s.pages_committed), wide=True),
    Column("DUPLICATES", lambda s: str(s.duplicates_skipped), wide=True),
    Column("ACTIVE SWEEP", lambda s: s.active_sweep_id or "-", wide=True),
    Column("LAST ATTEMPT", lambda s: when(s.last_attempt_time), wide=True),
    Column("FAILED RUNTIME (15m)", recent_runtime_failures, wide=True),
]

SWEEP_COLUMNS = [
    Column("SWEEP", lambda s: s.sweep_id),
    Column("REGIONS", lambda s: ",".join(s.regions) or "all"),
    Column("STATE", sweep_state),
    Column("RECORDS", lambda s: str(s.records_synced)),
    Column("BYTES", lambda s: human_bytes(s.bytes_synced)),
    Column("QUARANTINED", lambda s: str(s.quarantined)),
    Column("PAGES", lambda s: str(s.pages)),
    Column("STARTED", lambda s: when(s.start_time)),
    Column("BY", lambda s: s.started_by or "-"),
    Column("DUPLICATES", lambda s: str(s.duplicates_skipped), wide=True),
    Column("ERROR", lambda s: s.error or "-", wide=True),
]


def job_status(record: job_pb2.JobRecord) -> str:
    return enum_name(job_pb2.JobStatus, record.status, "JOB_STATUS_")


SYNCED_JOB_COLUMNS = [
    Column("SEQ", lambda j: str(j.sync_sequence)),
    Column("REGION", lambda j: j.record.region),
    Column("JOB", lambda j: j.record.job_id),
    Column("REV", lambda j: str(j.record.revision)),
    Column("STATUS", lambda j: job_status(j.record)),
    Column("GOVERNANCE", lambda j: gov_state(j.record.governance_state)),
    Column("TENANT", lambda j: f"{j.record.tenant_id}/{j.record.queue_id}"),
    Column("NODE", lambda j: j.record.node_id or "-"),
    Column("SYNCED", lambda j: when(j.sync_time)),
    Column("SHA-256", lambda j: j.record.canonical_payload_sha256.hex() or "-", wide=True),
    Column("IMAGE", lambda j: j.record.container_image or "-", wide=True),
]

QUARANTINE_COLUMNS = [
    Column("ID", lambda q: str(q.quarantine_id)),
    Column("REGION", lambda q: q.region),
    Column("JOB", lambda q: q.job_id or "?"),
    Column("REV", lambda q: str(q.revision) if q.revision else "?"),
    Column("REASON", lambda q: q.reason),
    Column("DETAIL", lambda q: q.detail or "-"),
    Column("AGE", lambda q: when(q.quarantine_time)),
    Column("BYTES", lambda q: str(len(q.raw_record)), wide=True),
    Column("CURSOR", lambda q: q.source_cursor or "-", wide=True),
]


def sync_status(ctx: Context, args: argparse.Namespace) -> None:
    reply: pb.ListSyncStatusesResponse | pb.GetSyncStatusResponse
    if args.region:
        reply = ctx.cp.sync.get_status_reply(args.region)
        ctx.out.show(reply.status, STATUS_COLUMNS, [reply.status])
    else:
        reply = ctx.cp.sync.list_statuses_reply()
        ctx.out.show(reply, STATUS_COLUMNS, reply.statuses)
    if ctx.out.format in ("table", "wide"):
        ctx.out.console.print(leader_line(reply), markup=False, highlight=False)


def sync_watch(ctx: Context, args: argparse.Namespace) -> int:
    shown = [c for c in STATUS_COLUMNS if not c.wide]
    header = [False]

    def show(message: pb.WatchSyncStatusResponse) -> None:
        if not header[0]:
            ctx.out.console.print("   ".join(c.header for c in shown), markup=False)
            header[0] = True
        ctx.out.console.print(
            "   ".join(c.cell(message.status) for c in shown), markup=False, highlight=False
        )

    return follow(
        ctx,
        lambda: ctx.cp.sync.watch_status(args.regions),
        show=show,
        max_messages=args.max_events,
        duration_seconds=args.duration,
    )


def sweep_start(ctx: Context, args: argparse.Namespace) -> int:
    expected: dict[str, int] = {}
    if not args.detach:  # the lag each region has now sizes its progress bar
        regions = set(args.regions)
        expected = {
            s.region: s.lag_changes
            for s in ctx.cp.sync.list_statuses()
            if not regions or s.region in regions
        }
    sweep = ctx.cp.sync.start_sweep(args.regions, request_id=args.request_id)
    if args.detach:
        if ctx.out.is_json:
            ctx.out.message(sweep)
        else:
            ctx.out.done("sweep", sweep.sweep_id, "started")
        return exitcodes.OK
    return follow_sweep(ctx, sweep.sweep_id, poll=args.poll, expected=expected)


def sweep_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.sync.list_sweeps(states=flatten(args.state), limit=args.limit)
    ctx.out.show(reply, SWEEP_COLUMNS, reply.sweeps, kind="sweep", name=lambda s: s.sweep_id)


def sweep_get(ctx: Context, args: argparse.Namespace) -> None:
    sweep = ctx.cp.sync.get_sweep(args.sweep_id)
    ctx.out.show(sweep, SWEEP_COLUMNS, [sweep], kind="sweep", name=lambda s: s.sweep_id)


def sweep_cancel(ctx: Context, args: argparse.Namespace) -> None:
    sweep = ctx.cp.sync.cancel_sweep(args.sweep_id)
    ctx.out.done("sweep", sweep.sweep_id, f"cancel requested ({sweep_state(sweep).lower()})", sweep)


def sweep_wait(ctx: Context, args: argparse.Namespace) -> int:
    sweep = ctx.cp.sync.get_sweep(args.sweep_id)
    if sweep.state in (pb.SWEEP_STATE_SUCCEEDED, pb.SWEEP_STATE_FAILED, pb.SWEEP_STATE_CANCELLED):
        return finish_sweep(ctx, sweep)
    return follow_sweep(ctx, args.sweep_id, poll=args.poll)


def sync_jobs_list(ctx: Context, args: argparse.Namespace) -> None:
    job_id, region = job_and_region(args.job, args.region)
    reply = ctx.cp.sync.list_jobs(
        region=region,
        governance_states=flatten(args.state),
        job_id=job_id,
        after_sync_sequence=args.after,
        omit_payload=not args.with_payload,
        limit=args.limit,
    )
    ctx.out.show(
        reply,
        SYNCED_JOB_COLUMNS,
        reply.jobs,
        kind="job",
        name=lambda j: f"{j.record.region}/{j.record.job_id}@{j.record.revision}",
    )
    if reply.has_more and not ctx.out.is_json:
        ctx.out.note(f"more rows follow: --after {reply.last_sync_sequence}")


def job_ref_of(ctx: Context, args: argparse.Namespace) -> resource_pb2.JobRef:
    """The job `sync jobs get` names: REGION/JOB[@REV], or the old spelling
    REGION JOB [--revision N] (still accepted, with a warning)."""
    if args.old_job_id is not None:
        ctx.out.note(
            f"warning: `sync jobs get REGION JOB` is deprecated; "
            f"use `sync jobs get {args.job}/{args.old_job_id}`"
        )
        ref = job_filter(f"{args.job}/{args.old_job_id}")
    else:
        try:
            ref = parse_job_ref(args.job)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(str(exc)) from None
    revision = getattr(args, "revision", None)  # the old --revision N
    if revision is not None:
        if ref.revision and ref.revision != revision:
            raise UsageError(f"two revisions: @{ref.revision} and --revision {revision}")
        ref.revision = revision
    return ref


def sync_jobs_get(ctx: Context, args: argparse.Namespace) -> int:
    ref = job_ref_of(ctx, args)
    job = ctx.cp.sync.get_job(ref.region, ref.job_id, revision=ref.revision)
    record = job.record
    digest = hashlib.sha256(record.canonical_payload).digest()
    intact = digest == record.canonical_payload_sha256
    if args.payload_out is not None:
        write_bytes(args.payload_out, record.canonical_payload)
    if ctx.out.is_json:
        ctx.out.message(job)
    else:
        ctx.out.details(
            [
                ("Job", f"{record.region}/{record.job_id}"),
                ("Revision", str(record.revision)),
                ("Tenant", f"{record.tenant_id}/{record.queue_id}"),
                ("Status", job_status(record)),
                ("Governance", gov_state(record.governance_state)),
                ("Node", record.node_id or "-"),
                ("Image", record.container_image or "-"),
                ("Updated", timestamp(record.update_time)),
                ("Synced", f"{timestamp(job.sync_time)} (sequence {job.sync_sequence})"),
                ("Cursor", record.cursor or "-"),
                (
                    "Payload",
                    f"{len(record.canonical_payload)} bytes, sha256 "
                    f"{record.canonical_payload_sha256.hex()} "
                    f"({'matches its digest' if intact else 'MISMATCH'}; "
                    "`pposctl sync verify` checks it against the chain)",
                ),
            ]
        )
        if args.payload_out is not None:
            ctx.out.note(f"canonical payload written to {args.payload_out}, byte for byte")
    if not intact:
        ctx.out.note("error: the payload does not match its SHA-256: report this")
        return exitcodes.SERVER_ERROR
    return exitcodes.OK


def write_bytes(path: Path, data: bytes) -> None:
    if str(path) == "-":
        os.write(1, data)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise UsageError(f"{path} exists; remove it or choose another file") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def quarantine_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.sync.list_quarantine(region=args.region, limit=args.limit)
    ctx.out.show(
        reply,
        QUARANTINE_COLUMNS,
        reply.records,
        kind="quarantine",
        name=lambda q: str(q.quarantine_id),
    )


# -- registration -------------------------------------------------------------------


def _stream_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-events", type=int, default=0, metavar="N", help="stop after N events"
    )
    parser.add_argument(
        "--duration", type=duration, default=None, metavar="DURATION", help="stop after this long"
    )


def poll_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll",
        type=duration,
        default=0.5,
        metavar="DURATION",
        help="how often progress is checked (default 0.5s)",
    )


def register(tree: Tree) -> None:
    jobs = tree.noun(
        "admin-jobs",
        "long-running admin jobs: sweeps, rollouts, region drains, mirror verification",
        aliases=["admin-job", "adminjobs", "aj"],
    )
    p = tree.verb(
        jobs,
        "start",
        admin_jobs_start,
        "start an admin job and follow its progress (--detach to return at once)",
        examples="  pposctl admin-jobs start health-sweep\n"
        "  pposctl admin-jobs start reimage-rollout -p region=eu-west-1 \\\n"
        "      -p image=reg/worker:7.4.1 -p target_image=reg/worker:7.4.2 \\\n"
        "      -p target_digest=sha256:... -p reason='CVE-2026-1234'\n"
        "  pposctl admin-jobs start mirror-verify -p regions=eu-west-1 -p against_source=true",
    )
    p.add_argument(
        "kind",
        type=ADMIN_JOB_KIND,
        metavar="KIND",
        help="health-sweep, sync-sweep, reimage-rollout, region-drain, mirror-verify",
    )
    p.add_argument(
        "-p",
        "--param",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="parameter: region, regions, image, target_image, target_digest, against_source, "
        "reason",
    )
    request_id_flag(p)
    p.add_argument("--detach", action="store_true", help="print the job id and return")
    p = tree.verb(jobs, "watch", admin_jobs_watch, "follow a job's progress until it ends")
    p.add_argument("admin_job_id", metavar="JOB", help="admin job id")
    p = tree.verb(jobs, "wait", admin_jobs_wait, "wait until a job ends (exit 0 if it succeeded)")
    p.add_argument("admin_job_id", metavar="JOB", help="admin job id")
    p = tree.verb(jobs, "get", admin_jobs_get, "show one job")
    p.add_argument("admin_job_id", metavar="JOB", help="admin job id")
    p = tree.verb(jobs, "list", admin_jobs_list, "list jobs, newest first", aliases=["ls"])
    p.add_argument(
        "--kind",
        type=ADMIN_JOB_KINDS,
        action="append",
        metavar="KIND[,KIND]",
        help="health-sweep, sync-sweep, reimage-rollout, region-drain, mirror-verify",
    )
    p.add_argument(
        "--state",
        type=ADMIN_JOB_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="pending, running, succeeded, failed, cancelling, cancelled",
    )
    limit_flag(p, "admin jobs")
    p = tree.verb(jobs, "cancel", admin_jobs_cancel, "stop a job at its next safe point")
    p.add_argument("admin_job_id", metavar="JOB", help="admin job id")
    reason_flag(p)
    p.add_argument("--wait", action="store_true", help="follow it until it has stopped")

    audit = tree.noun("audit", "the append-only audit log of every change")
    p = tree.verb(audit, "list", audit_list, "list entries, oldest first", aliases=["ls"])
    p.add_argument("--after", type=int, default=0, metavar="ID", help="only entries after ID")
    p.add_argument("--kind", default="", help="resource kind, e.g. node, tenant")
    p.add_argument("--resource", default="", metavar="ID", help="resource id")
    limit_flag(p, "entries")
    p = tree.verb(
        audit, "watch", audit_watch, "print entries as they are written (tail -f)", aliases=["tail"]
    )
    p.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="ID",
        help="start after ID (default: only new entries)",
    )
    p.add_argument("--kind", default="", help="resource kind")
    _stream_flags(p)

    sync = tree.noun("sync", "registry sync: status, sweeps, synced jobs, quarantine")
    p = tree.verb(sync, "status", sync_status, "sync status of every region (or one)")
    p.add_argument("region", nargs="?", default="", metavar="REGION", help="default: every region")
    add_verify_verb(tree, sync)
    p = tree.verb(sync, "watch", sync_watch, "print sync status changes as they happen")
    p.add_argument("regions", nargs="*", metavar="REGION", help="default: every region")
    _stream_flags(p)
    sweep_parser = tree.verb(sync, "sweep", lambda c, a: None, "sweeps: start, get, cancel, wait")
    sweep_verbs = sweep_parser.add_subparsers(
        dest="sweep_verb", metavar="VERB", required=True, parser_class=type(sweep_parser)
    )
    p = tree.verb(
        sweep_verbs,
        "start",
        sweep_start,
        "sweep regions now and show progress (--detach to return at once)",
        examples="  pposctl sync sweep start eu-west-1 us-east-1",
    )
    p.add_argument("regions", nargs="*", metavar="REGION", help="default: every region")
    request_id_flag(p)
    p.add_argument("--detach", action="store_true", help="print the sweep id and return")
    poll_flag(p)
    p = tree.verb(sweep_verbs, "list", sweep_list, "sweeps, newest first", aliases=["ls"])
    p.add_argument(
        "--state",
        type=SWEEP_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="pending, running, succeeded, failed, cancelled",
    )
    limit_flag(p, "sweeps")
    for verb, handler, helptext in (
        ("get", sweep_get, "show one sweep"),
        ("cancel", sweep_cancel, "stop a sweep after its current page"),
        ("wait", sweep_wait, "wait until a sweep ends (exit 0 if it succeeded)"),
    ):
        p = tree.verb(sweep_verbs, verb, handler, helptext)
        p.add_argument("sweep_id", metavar="SWEEP", help="sweep id")
        if verb == "wait":
            poll_flag(p)
    jobs_parser = tree.verb(sync, "jobs", lambda c, a: None, "synced job revisions")
    job_verbs = jobs_parser.add_subparsers(
        dest="jobs_verb", metavar="VERB", required=True, parser_class=type(jobs_parser)
    )
    p = tree.verb(
        job_verbs, "list", sync_jobs_list, "synced revisions in sync order", aliases=["ls"]
    )
    p.add_argument("--region", default="", help="only jobs of this region")
    p.add_argument(
        "--state",
        type=GOVERNANCE_STATES,
        action="append",
        metavar="STATE[,STATE]",
        help="governance states, e.g. failed-runtime-environment",
    )
    job_filter_flag(p, "only the revisions of this job")
    old_spelling(p, "--job-id", "--job", dest="job", type=job_filter)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="after this sync sequence")
    p.add_argument("--with-payload", action="store_true", help="include canonical payloads")
    limit_flag(p, "revisions")
    p = tree.verb(
        job_verbs,
        "get",
        sync_jobs_get,
        "one synced revision; its payload checked against its SHA-256",
        examples="  pposctl sync jobs get eu-west-1/job_1779116602472_1d246 \\\n"
        "      --payload-out job.json\n"
        "  pposctl sync jobs get eu-west-1/job_1779116602472_1d246@2   # revision 2",
    )
    p.add_argument(
        "job",
        metavar="REGION/JOB[@REV]",
        help="the job, as `sync jobs list -o name` prints it (default revision: the newest)",
    )
    # The old spelling `sync jobs get REGION JOB [--revision N]`: hidden, with a warning.
    p.add_argument("old_job_id", nargs="?", default=None, help=argparse.SUPPRESS)
    old_spelling(p, "--revision", "REGION/JOB@REV", dest="revision", type=int)
    p.add_argument(
        "--payload-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the canonical payload byte for byte ('-': stdout)",
    )
    quarantine_parser = tree.verb(
        sync, "quarantine", lambda c, a: None, "records that failed verification"
    )
    q_verbs = quarantine_parser.add_subparsers(
        dest="q_verb", metavar="VERB", required=True, parser_class=type(quarantine_parser)
    )
    p = tree.verb(
        q_verbs, "list", quarantine_list, "quarantined records, oldest first", aliases=["ls"]
    )
    p.add_argument("--region", default="", help="only records of this region")
    limit_flag(p, "records")
