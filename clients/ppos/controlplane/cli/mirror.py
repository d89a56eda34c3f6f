"""`pposctl sync verify`: the mirror checked against its hash chains and signed checkpoints."""

from __future__ import annotations

import argparse

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


def sync_verify(ctx: Context, args: argparse.Namespace) -> int:
    regions = [args.region] if args.region else []
    verifications = ctx.cp.sync.verify_mirror(regions)
    ctx.out.show(
        pb.VerifyMirrorResponse(verifications=verifications),
        VERIFY_COLUMNS,
        verifications,
        kind="region",
        name=lambda v: v.region,
    )
    diverged = [v for v in verifications if not v.intact]
    for v in diverged:
        ctx.out.note(f"error: {describe(v)}")
    return exitcodes.OPERATION_FAILED if diverged else exitcodes.OK


def add_verify_verb(tree: Tree, sync: argparse._SubParsersAction[Parser]) -> None:
    p = tree.verb(
        sync,
        "verify",
        sync_verify,
        "check the mirror against its hash chains and signed checkpoints",
        examples="  pposctl sync verify            # every region\n  pposctl sync verify eu-west-1",
    )
    p.add_argument("region", nargs="?", default="", metavar="REGION", help="default: every region")
