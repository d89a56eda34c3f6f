"""`pposctl sync verify`: the mirror checked against its hash chains and signed checkpoints,
and with `--against-source` against what each region's registry serves now."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.app import Context, Parser, Tree
from ppos.controlplane.cli.output import Column, enum_name
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb


def _result(v: pb.MirrorVerification) -> str:
    if v.intact:
        return "verified"
    return enum_name(pb.DivergenceKind, v.divergence.kind, "DIVERGENCE_KIND_")


VERIFY_COLUMNS = [
    Column("REGION", lambda v: v.region),
    Column("RESULT", _result),
    Column("RECORDS", lambda v: str(v.synced_records)),
    Column("QUARANTINED", lambda v: str(v.quarantined_records)),
    Column("CHECKPOINTS", lambda v: str(v.checkpoints)),
    Column("HEAD", lambda v: v.chain_head.hex()[:16] or "-"),
]


def _source(v: pb.MirrorVerification) -> str:
    state = enum_name(pb.SourceCheckState, v.source.state, "SOURCE_CHECK_STATE_")
    return "matches" if v.source.state == pb.SOURCE_CHECK_STATE_MATCHES else state


SOURCE_COLUMNS = [
    *VERIFY_COLUMNS[:2],
    Column("SOURCE", _source),
    Column("COMPARED", lambda v: str(v.source.mirror_records)),
    Column("CHANGED", lambda v: str(v.source.changed)),
    Column("MISSING", lambda v: str(v.source.missing_at_source)),
    Column("NOT-MIRRORED", lambda v: str(v.source.not_mirrored)),
    Column("CONFLICTS", lambda v: str(v.source.conflicts_total)),
    *VERIFY_COLUMNS[2:],
]
_HOLDS = {
    pb.SOURCE_HOLDS_SYNCED: "the synced payload",
    pb.SOURCE_HOLDS_QUARANTINED: "the quarantined payload",
    pb.SOURCE_HOLDS_BOTH: "both payloads still",
    pb.SOURCE_HOLDS_OTHER: "neither: another payload",
    pb.SOURCE_HOLDS_NONE: "no payload for it",
}


def describe(v: pb.MirrorVerification) -> str:
    """One line naming where the region's mirror departs from its chain."""
    d = v.divergence
    where = d.table
    if d.position:
        where += f" position {d.position}"
    if d.row_id:
        where += f" (id {d.row_id})"
    if d.job_id:
        where += f", {d.job_id}@{d.revision}"
    fields = f", fields: {', '.join(d.fields)}" if d.fields else ""
    return f"{v.region}: {_result(v)} at {where}{fields}: {d.detail}"


def _digests(digests: Sequence[bytes]) -> str:
    return ", ".join(d.hex()[:16] for d in digests) or "none"


def _conflict_line(region: str, c: pb.RevisionConflict) -> str:
    return (
        f"{region}: conflict {c.job_id}@{c.revision} (quarantine id {c.quarantine_id}): "
        f"the source holds {_HOLDS.get(c.source_holds, '?')} "
        f"(synced {c.synced_sha256.hex()[:16] or 'none'}, "
        f"quarantined {c.quarantined_sha256.hex()[:16]}, "
        f"source {_digests(c.source_sha256)})"
    )


def source_lines(v: pb.MirrorVerification) -> list[str]:
    """What `--against-source` found in one region, one line each (bounded by the server)."""
    source, region = v.source, v.region
    if source.state == pb.SOURCE_CHECK_STATE_UNAVAILABLE:
        return [f"error: {region}: source UNAVAILABLE: {source.detail}"]
    lines = []
    if source.detail:
        lines.append(f"error: {region}: source: {source.detail}")
    for d in source.divergences:
        kind = enum_name(pb.SourceDivergenceKind, d.kind, "SOURCE_DIVERGENCE_KIND_")
        where = f" (sync sequence {d.sync_sequence})" if d.sync_sequence else ""
        lines.append(f"error: {region}: source: {kind} {d.job_id}@{d.revision}{where}: {d.detail}")
    shown = len(source.divergences)
    total = source.changed + source.missing_at_source + source.not_mirrored
    if total > shown:
        lines.append(f"error: {region}: source: {total - shown} more divergences not shown")
    lines.extend(_conflict_line(region, c) for c in source.conflicts)
    if source.conflicts_total > len(source.conflicts):
        lines.append(
            f"{region}: {source.conflicts_total - len(source.conflicts)} more conflicts not shown"
        )
    return lines


def sync_verify(ctx: Context, args: argparse.Namespace) -> int:
    regions = [args.region] if args.region else []
    verifications = ctx.cp.sync.verify_mirror(
        regions,
        against_source=args.against_source,
        max_divergences=args.max_divergences,
        check_payloads=args.payloads,
    )
    ctx.out.show(
        pb.VerifyMirrorResponse(verifications=verifications),
        SOURCE_COLUMNS if args.against_source else VERIFY_COLUMNS,
        verifications,
        kind="region",
        name=lambda v: v.region,
    )
    diverged = [v for v in verifications if not v.intact]
    for v in diverged:
        ctx.out.note(f"error: {describe(v)}")
    unavailable = False
    if args.against_source:
        for v in verifications:
            if v.source.state == pb.SOURCE_CHECK_STATE_DIVERGES:
                diverged.append(v)
            unavailable |= v.source.state == pb.SOURCE_CHECK_STATE_UNAVAILABLE
            if not ctx.out.is_json:
                for line in source_lines(v):
                    ctx.out.note(line)
    if diverged:
        return exitcodes.OPERATION_FAILED
    return exitcodes.UNAVAILABLE if unavailable else exitcodes.OK


def add_verify_verb(tree: Tree, sync: argparse._SubParsersAction[Parser]) -> None:
    p = tree.verb(
        sync,
        "verify",
        sync_verify,
        "check the mirror against its hash chains and signed checkpoints",
        examples="  pposctl sync verify            # every region\n"
        "  pposctl sync verify eu-west-1\n"
        "  pposctl sync verify eu-west-1 --against-source --timeout 5m\n"
        "  pposctl sync verify --payloads --timeout 10m",
    )
    p.add_argument("region", nargs="?", default="", metavar="REGION", help="default: every region")
    p.add_argument(
        "--against-source",
        action="store_true",
        help="also read each region's feed back from its registry (metered, up to the "
        "mirror's cursor) and name the revisions that differ",
    )
    p.add_argument(
        "--payloads",
        action="store_true",
        help="also hash every stored payload against its digest (the scheduled "
        "verification's pass; reads every payload)",
    )
    p.add_argument(
        "--max-divergences",
        type=int,
        default=0,
        metavar="N",
        help="source divergences and conflicts listed per region (default 20, at most 1000)",
    )
