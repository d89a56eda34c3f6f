"""Enrollments listed and revoked: states, filters, signed pages, never the token, and
a revoked token that enrolls nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.helpers import db_state, refusal, registry, scalar, set_time
from tests.ops.support import operator_env, pposctl
from tests.support.operators import add_operator
from tests.support.servers import RunningPlane

ISSUED = pb.ENROLLMENT_STATE_ISSUED
REDEEMED = pb.ENROLLMENT_STATE_REDEEMED
EXPIRED = pb.ENROLLMENT_STATE_EXPIRED
REVOKED = pb.ENROLLMENT_STATE_REVOKED


async def _create(plane: RunningPlane, region: str = "eu-west-1") -> pb.CreateEnrollmentResponse:
    request = pb.CreateEnrollmentRequest(region=region, cluster="c1", labels={"tier": "gold"})
    reply: pb.CreateEnrollmentResponse = await registry(plane).CreateEnrollment(
        request, metadata=plane.operator
    )
    return reply


async def _redeem(plane: RunningPlane, token: str) -> pb.EnrollNodeResponse:
    reply: pb.EnrollNodeResponse = await registry(plane).EnrollNode(
        pb.EnrollNodeRequest(hostname="worker-1"),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    return reply


async def _list(plane: RunningPlane, **fields: object) -> pb.ListEnrollmentsResponse:
    reply: pb.ListEnrollmentsResponse = await registry(plane).ListEnrollments(
        pb.ListEnrollmentsRequest(**fields),  # type: ignore[arg-type]
        metadata=plane.operator,
    )
    return reply


async def _four_states(plane: RunningPlane) -> dict[str, pb.CreateEnrollmentResponse]:
    made = {
        "issued": await _create(plane),
        "redeemed": await _create(plane),
        "expired": await _create(plane, "us-east-1"),
        "revoked": await _create(plane, "us-east-1"),
    }
    await _redeem(plane, made["redeemed"].enrollment_token)
    set_time(
        plane.database_url,
        "UPDATE node_enrollments SET expires_at = :t WHERE enrollment_id = :e",
        60,
        e=made["expired"].enrollment_id,
    )
    await registry(plane).RevokeEnrollment(
        pb.RevokeEnrollmentRequest(enrollment_id=made["revoked"].enrollment_id, reason="leaked"),
        metadata=plane.operator,
    )
    return made


async def test_states_filters_and_never_the_token(plane: RunningPlane) -> None:
    made = await _four_states(plane)
    listed = await _list(plane)
    ids = [e.enrollment_id for e in listed.enrollments]
    assert ids == [made[k].enrollment_id for k in ("revoked", "expired", "redeemed", "issued")]
    by_id = {e.enrollment_id: e for e in listed.enrollments}
    assert {k: by_id[made[k].enrollment_id].state for k in made} == {
        "issued": ISSUED,
        "redeemed": REDEEMED,
        "expired": EXPIRED,
        "revoked": REVOKED,
    }
    redeemed = by_id[made["redeemed"].enrollment_id]
    assert redeemed.node_id.startswith("node_")
    assert redeemed.redeem_time.seconds > 0
    revoked = by_id[made["revoked"].enrollment_id]
    assert (revoked.revoke_reason, revoked.revoked_by) == ("leaked", "operator:break-glass")
    assert dict(by_id[made["issued"].enrollment_id].labels) == {"tier": "gold"}

    # Neither a token nor its hash is in the reply, in any form.
    wire = listed.SerializeToString()
    for reply in made.values():
        token = reply.enrollment_token
        for secret in (token, hashlib.sha256(token.encode()).hexdigest()):
            assert secret.encode() not in wire

    issued_or_expired = await _list(plane, states=[ISSUED, EXPIRED])
    assert {e.enrollment_id for e in issued_or_expired.enrollments} == {
        made["issued"].enrollment_id,
        made["expired"].enrollment_id,
    }
    us_revoked = await _list(plane, region="us-east-1", states=[REVOKED])
    assert [e.enrollment_id for e in us_revoked.enrollments] == [made["revoked"].enrollment_id]
    assert (await _list(plane, region="ap-south-1")).enrollments == []


async def test_pages_are_signed_for_their_filter(plane: RunningPlane) -> None:
    made = [await _create(plane) for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await _list(plane, region="eu-west-1", page_size=2, page_token=token)
        assert len(page.enrollments) <= 2
        seen.extend(e.enrollment_id for e in page.enrollments)
        token = page.next_page_token
        if not token:
            break
    assert seen == [m.enrollment_id for m in reversed(made)]

    first = await _list(plane, page_size=2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(plane, region="eu-west-1", page_size=2, page_token=first.next_page_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in refusal(caught.value).field_violations


async def test_a_revoked_token_enrolls_nothing(plane: RunningPlane) -> None:
    created = await _create(plane)
    stub = registry(plane)
    revoke = pb.RevokeEnrollmentRequest(enrollment_id=created.enrollment_id, reason="wrong host")
    first = await stub.RevokeEnrollment(revoke, metadata=plane.operator)
    assert first.enrollment.state == REVOKED

    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _redeem(plane, created.enrollment_token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusal(caught.value).reason == "ENROLLMENT_TOKEN_INVALID"
    # Revoking again changes nothing: same answer, no second audit entry.
    again = await stub.RevokeEnrollment(revoke, metadata=plane.operator)
    assert again.enrollment == first.enrollment
    assert db_state(plane.database_url) == before

    audited = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_id = :e AND reason = 'wrong host'",
        e=created.enrollment_id,
    )
    assert audited == 1


async def test_revoke_refusals_change_nothing(plane: RunningPlane) -> None:
    redeemed = await _create(plane)
    await _redeem(plane, redeemed.enrollment_token)
    stub = registry(plane)
    before = db_state(plane.database_url)
    cases = [
        (redeemed.enrollment_id, "why", grpc.StatusCode.FAILED_PRECONDITION),
        ("enr_missing", "why", grpc.StatusCode.NOT_FOUND),
        (redeemed.enrollment_id, "", grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for enrollment_id, reason, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RevokeEnrollment(
                pb.RevokeEnrollmentRequest(enrollment_id=enrollment_id, reason=reason),
                metadata=plane.operator,
            )
        assert caught.value.code() == code, (enrollment_id, reason)
    assert db_state(plane.database_url) == before


async def test_viewers_list_operators_revoke_with_pposctl(plane: RunningPlane) -> None:
    made = await _create(plane)
    viewer = await add_operator(plane, "vera", "viewer")
    operator = await add_operator(plane, "otto", "operator")
    env = operator_env(plane, PPOS_CONTROL_TOKEN=viewer.credential)
    listed = await pposctl(plane, "enrollments", "list", "--state", "issued", "-o", "name", env=env)
    assert listed.code == 0, listed.stderr
    assert listed.lines() == [f"enrollment/{made.enrollment_id}"]
    refused = await pposctl(
        plane, "enrollments", "revoke", made.enrollment_id, "--reason", "lost", env=env
    )
    assert refused.code != 0

    env["PPOS_CONTROL_TOKEN"] = operator.credential
    revoked = await pposctl(
        plane, "enrollments", "revoke", made.enrollment_id, "--reason", "lost", env=env
    )
    assert revoked.code == 0, revoked.stderr
    assert revoked.lines() == [f"enrollment/{made.enrollment_id} revoked"]
    wide = await pposctl(plane, "enrollments", "list", "-o", "wide", env=env)
    assert "REVOKED" in wide.stdout
    assert "lost" in wide.stdout
    assert made.enrollment_token not in wide.stdout
