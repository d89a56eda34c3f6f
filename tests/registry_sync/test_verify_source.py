"""VerifyMirror(against_source): the mirror compared with what the simulated registry
serves now, read back over the external contract. The registry's history is
changed with the simulator's fault file (`changed_at`, `omit_at`), the mirror
past its triggers as someone with database access would (test_tamper.py).
A viewer may verify the mirror but not against the source (the contract's
field role): refused at the edge before any registry is read."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import SyncWorld, call_error, digest, write_faults
from tests.support.dbstate import row_counts, table_rows
from tests.support.operators import add_operator

REGION = "eu-west-1"
RECORDS = 30
CONFLICT = 10  # the registry also serves another payload for this position's revision
CHANGED, OMITTED, DELETED = 5, 7, 3


async def verify(w: SyncWorld, **options: object) -> pb.MirrorVerification:
    reply = await w.stub.VerifyMirror(
        pb.VerifyMirrorRequest(regions=[REGION], against_source=True, **options),  # type: ignore[arg-type]
        metadata=w.md,
    )
    (verification,) = reply.verifications
    return verification


def source_divergences() -> float:
    labels = {"region": REGION, "kind": "SOURCE"}
    return REGISTRY.get_sample_value("ppos_sync_verify_divergences_total", labels) or 0.0


def role_refusals() -> float:
    labels = {"reason": "ROLE_REQUIRED"}
    return REGISTRY.get_sample_value("ppos_auth_failures_total", labels) or 0.0


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes), "no rich status details"
    for item in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ErrorInfo()
        if item.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


def key(w: SyncWorld, position: int) -> tuple[str, int]:
    record = w.feed(REGION).record(position)
    return (record.job_id, record.revision)


def delete_synced_row(database_url: str, job_id: str, revision: int) -> None:
    """Past the append-only triggers, as the tables' owner would (test_tamper.py)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            postgres = engine.dialect.name == "postgresql"
            if postgres:
                connection.exec_driver_sql("ALTER TABLE synced_jobs DISABLE TRIGGER USER")
            else:
                connection.exec_driver_sql("DROP TRIGGER synced_jobs_no_delete")
            connection.execute(
                text("DELETE FROM synced_jobs WHERE job_id = :j AND revision = :r"),
                {"j": job_id, "r": revision},
            )
            if postgres:
                connection.exec_driver_sql("ALTER TABLE synced_jobs ENABLE TRIGGER USER")
    finally:
        engine.dispose()


async def synced_world(world: WorldFactory, faults: Path) -> SyncWorld:
    write_faults(faults, {"conflict_at": [CONFLICT]})
    w = await world(
        {
            REGION: {
                "synthetic": RECORDS,
                "synthetic_size": 500,
                "extra": ["--faults", str(faults)],
            }
        },
        env={"PPOS_SYNC_PAGE_RECORDS": "7"},
    )
    sweep = await w.sweep(REGION)
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED, sweep.error
    return w


async def test_a_clean_mirror_matches_and_each_divergence_is_named(
    world: WorldFactory, tmp_path: Path, database_url: str
) -> None:
    faults = tmp_path / "faults.json"
    w = await synced_world(world, faults)
    conflict_key = key(w, CONFLICT)
    synced = digest(w.feed(REGION).record(CONFLICT).canonical_payload)

    # The registry still serves both payloads of the conflicting revision.
    calls = dict(w.sims[REGION].registry.calls)
    clean = await verify(w)
    # Read back over the external contract, one ListJobChanges call a page.
    after = w.sims[REGION].registry.calls
    assert after["ListJobChanges"] - calls["ListJobChanges"] == clean.source.source_pages
    assert clean.intact
    source = clean.source
    assert source.state == pb.SOURCE_CHECK_STATE_MATCHES, source
    assert (source.mirror_records, source.matching, source.source_records) == (
        RECORDS,
        RECORDS,
        RECORDS + 1,
    )
    assert source.cursor == w.feed(REGION).head_cursor
    assert source.source_pages == 5  # pages of 7 up to the cursor
    assert (source.changed, source.missing_at_source, source.not_mirrored) == (0, 0, 0)
    assert list(source.divergences) == []
    (conflict,) = source.conflicts
    assert (conflict.job_id, conflict.revision) == conflict_key
    assert conflict.source_holds == pb.SOURCE_HOLDS_BOTH
    assert conflict.synced_sha256 == synced == conflict.source_sha256[0]
    quarantined = conflict.quarantined_sha256
    assert list(conflict.source_sha256) == [synced, quarantined]

    # Fixed at the registry: it serves the synced payload alone.
    write_faults(faults, {})
    (conflict,) = (await verify(w)).source.conflicts
    assert conflict.source_holds == pb.SOURCE_HOLDS_SYNCED
    assert list(conflict.source_sha256) == [synced]

    # The registry's history changes (two payloads replaced, one gone) and a
    # mirrored row is deleted in the database.
    write_faults(faults, {"changed_at": [CHANGED, CONFLICT], "omit_at": [OMITTED]})
    delete_synced_row(database_url, *key(w, DELETED))
    counted = source_divergences()
    found = await verify(w)
    assert source_divergences() == counted + 1
    assert not found.intact
    assert found.divergence.kind == pb.DIVERGENCE_KIND_DELETED
    source = found.source
    assert source.state == pb.SOURCE_CHECK_STATE_DIVERGES
    assert (source.changed, source.missing_at_source, source.not_mirrored) == (2, 1, 1)
    assert (source.mirror_records, source.matching) == (RECORDS - 1, RECORDS - 4)
    named = {(d.kind, d.job_id, d.revision) for d in source.divergences}
    assert named == {
        (pb.SOURCE_DIVERGENCE_KIND_CHANGED, *key(w, CHANGED)),
        (pb.SOURCE_DIVERGENCE_KIND_CHANGED, *conflict_key),
        (pb.SOURCE_DIVERGENCE_KIND_MISSING_AT_SOURCE, *key(w, OMITTED)),
        (pb.SOURCE_DIVERGENCE_KIND_NOT_MIRRORED, *key(w, DELETED)),
    }
    changed = next(d for d in source.divergences if (d.job_id, d.revision) == key(w, CHANGED))
    record = w.feed(REGION).record(CHANGED)
    assert changed.mirror_sha256 == digest(record.canonical_payload)
    assert list(changed.source_sha256) == [digest(record.canonical_payload + b" ")]
    assert changed.sync_sequence > 0
    not_mirrored = source.divergences[-1]  # after the synced rows, in feed order
    assert not_mirrored.kind == pb.SOURCE_DIVERGENCE_KIND_NOT_MIRRORED
    assert not_mirrored.source_cursor == w.feed(REGION).cursor(DELETED)
    (conflict,) = source.conflicts
    assert conflict.source_holds == pb.SOURCE_HOLDS_QUARANTINED
    assert list(conflict.source_sha256) == [quarantined]

    # Bounded: the first N listed, the counts cover them all.
    bounded = (await verify(w, max_divergences=2)).source
    assert len(bounded.divergences) == 2
    assert bounded.changed + bounded.missing_at_source + bounded.not_mirrored == 4


async def test_an_unreachable_registry_is_unavailable_and_nothing_changes(
    world: WorldFactory, tmp_path: Path, database_url: str
) -> None:
    w = await synced_world(world, tmp_path / "faults.json")
    await w.sims[REGION].stop(0)
    before = (row_counts(database_url), table_rows(database_url, "sync_regions"))
    verification = await verify(w)
    assert verification.intact  # the chain is checked all the same
    source = verification.source
    assert source.state == pb.SOURCE_CHECK_STATE_UNAVAILABLE
    assert REGION in source.detail
    assert "UNAVAILABLE" in source.detail
    assert source.mirror_records == 0
    assert list(source.divergences) == []
    assert (row_counts(database_url), table_rows(database_url, "sync_regions")) == before


async def test_max_divergences_out_of_range_is_refused(world: WorldFactory) -> None:
    w = await world({REGION: {"synthetic": 2}})
    for bad in (-1, 1001):
        request = pb.VerifyMirrorRequest(against_source=True, max_divergences=bad)
        error = await call_error(w.stub.VerifyMirror(request, metadata=w.md))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_divergences" in (error.details() or "")


async def test_a_viewer_verifies_the_mirror_but_only_an_operator_against_the_source(
    world: WorldFactory, tmp_path: Path
) -> None:
    w = await synced_world(world, tmp_path / "faults.json")
    viewer = await add_operator(w.plane, "viewer-1", "viewer")
    operator = await add_operator(w.plane, "operator-1", "operator")
    calls, refusals = dict(w.sims[REGION].registry.calls), role_refusals()

    # The chains alone: a read, the viewer's.
    reply = await w.stub.VerifyMirror(
        pb.VerifyMirrorRequest(regions=[REGION], max_divergences=5), metadata=viewer.metadata
    )
    (chains,) = reply.verifications
    assert chains.intact
    assert not chains.HasField("source")
    assert w.sims[REGION].registry.calls == calls

    # Against the source: refused before the handler, no registry read.
    costly = pb.VerifyMirrorRequest(regions=[REGION], against_source=True)
    error = await call_error(w.stub.VerifyMirror(costly, metadata=viewer.metadata))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        "VerifyMirror with against_source needs the operator role; this credential has viewer"
    )
    info = error_info(error)
    assert info.reason == "ROLE_REQUIRED"
    assert dict(info.metadata) == {
        "required_role": "operator",
        "role": "viewer",
        "field": "against_source",
        "request_id": info.metadata["request_id"],
    }
    assert w.sims[REGION].registry.calls == calls, "the registry was read for a refused call"
    assert role_refusals() == refusals + 1

    # An operator's credential passes, and the registry is read back.
    reply = await w.stub.VerifyMirror(costly, metadata=operator.metadata)
    (checked,) = reply.verifications
    assert checked.source.state == pb.SOURCE_CHECK_STATE_MATCHES, checked.source
    read = w.sims[REGION].registry.calls["ListJobChanges"] - calls["ListJobChanges"]
    assert read == checked.source.source_pages > 0
