"""Hostile request bodies against the whole plane: authentication comes before
decoding, an undecodable body is a fixed INVALID_ARGUMENT on every method (the
open ones, health and reflection included), sizes are held to each method's
limit, nothing is logged as an error and nothing changes.

Runs against a real server on SQLite and on PostgreSQL (the `plane` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from ppos.controlplane.security.access import DEFAULT_MAX_REQUEST_BYTES
from tests.support.dbstate import row_counts
from tests.support.logs import captured
from tests.support.protowire import length_delimited
from tests.support.servers import RunningPlane

GOVERNANCE = "/ppos.controlplane.governance.v1.GovernanceService"
GET_JWKS = "/ppos.controlplane.auth.v1.JwksService/GetJwks"
LIST_TENANTS = f"{GOVERNANCE}/ListTenants"
GET_TENANT = f"{GOVERNANCE}/GetTenant"
PROVISION_TENANT = f"{GOVERNANCE}/ProvisionTenant"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
OPEN = (GET_JWKS, HEALTH_CHECK, REFLECTION)
PROVISION_LIMIT = 1024 * 1024  # its access option in governance_service.proto
FIXED_MESSAGE = "invalid request: request: is not a valid encoding of this method's request message"
HOSTILE = {
    "a tag with no end": b"\xff",
    "a length with no bytes": b"\x0a\x01",
    "101 nested unknown groups": b"\xa3\x06" * 101 + b"\xa4\x06" * 101,
}
# Field 1 is a string in these methods' requests (GetJwks takes none: to it, the
# same bytes are a well-formed unknown field).
BAD_UTF8 = b"\x0a\x02\xff\xfe"
STRING_FIRST = (GET_TENANT, PROVISION_TENANT, HEALTH_CHECK, REFLECTION)
WORDS_NEVER_SHOWN = ("class", "Error", "parsing", "ppos.", "google.", ".py", "SELECT")


async def _call(plane: RunningPlane, method: str, body: bytes, metadata: Any = None) -> Any:
    try:
        await plane.channel.unary_unary(method)(body, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"{method} accepted a hostile body")


def _reason(error: Any) -> str:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes)
    for item in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ErrorInfo()
        if item.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


def _reflect(address: str, body: bytes) -> Any:
    """A raw message on the reflection stream, with the blocking client (see
    tests/security/test_edge_decoding.py on why not the aio one)."""
    with grpc.insecure_channel(address) as channel:
        try:
            for _ in channel.stream_stream(REFLECTION)(iter([body]), timeout=30):
                pass
        except grpc.RpcError as error:
            return error
    raise AssertionError("reflection accepted a hostile body")


async def test_undecodable_bodies_are_refused_after_authentication(plane: RunningPlane) -> None:
    before = row_counts(plane.database_url)
    cases = [
        (name, body, method)
        for name, body in HOSTILE.items()
        for method in (*OPEN, LIST_TENANTS, GET_TENANT, PROVISION_TENANT)
    ] + [("a string that is not UTF-8", BAD_UTF8, method) for method in STRING_FIRST]
    with captured() as logs:
        for name, body, method in cases:
            if method == REFLECTION:
                error = await asyncio.to_thread(_reflect, plane.address, body)
            else:
                # Open methods: nothing to authenticate, so the body is judged at once.
                error = await _call(plane, method, body, None if method in OPEN else plane.operator)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, method)
            assert error.details() == FIXED_MESSAGE
            assert _reason(error) == "UNDECODABLE_REQUEST"
            if method not in OPEN:
                # No credential: only UNAUTHENTICATED, whatever the body.
                error = await _call(plane, method, body)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, method)
                assert _reason(error) == "MISSING_CREDENTIAL"
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []
    refused = [entry for entry in logs if entry.get("reason") == "UNDECODABLE_REQUEST"]
    assert refused
    assert {entry["log_level"] for entry in refused} == {"info"}
    assert row_counts(plane.database_url) == before
    strangers = [case for case in cases if case[2] not in OPEN]
    assert len(plane.auth_failures) == len(strangers)
    assert not any(word in FIXED_MESSAGE for word in WORDS_NEVER_SHOWN)


async def test_each_method_takes_requests_up_to_its_own_limit(plane: RunningPlane) -> None:
    before = row_counts(plane.database_url)
    over_default = length_delimited(1, b"t" * DEFAULT_MAX_REQUEST_BYTES)  # a tenant id, too long
    error = await _call(plane, GET_TENANT, over_default)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # the size is not told to strangers
    error = await _call(plane, GET_TENANT, over_default, plane.operator)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "REQUEST_TOO_LARGE"
    assert f"this method takes at most {DEFAULT_MAX_REQUEST_BYTES:,}" in error.details()
    # ProvisionTenant takes more: the same bytes are decoded and validated.
    big = length_delimited(1, b"req_1") + length_delimited(2, b"t" * (PROVISION_LIMIT // 2))
    error = await _call(plane, PROVISION_TENANT, big, plane.operator)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) != "REQUEST_TOO_LARGE"
    # Over the largest limit of all, the transport refuses before the edge runs.
    huge = length_delimited(2, b"t" * PROVISION_LIMIT)
    for metadata in (None, plane.operator):
        error = await _call(plane, PROVISION_TENANT, huge, metadata)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert row_counts(plane.database_url) == before


@pytest.mark.parametrize("count", [70_000])
async def test_a_huge_repeated_filter_is_refused_by_its_size(
    plane: RunningPlane, count: int
) -> None:
    # ListTenants{phases: [ACTIVE] * 70000}: 70 KB, over the default limit.
    body = length_delimited(1, b"\x02" * count)
    error = await _call(plane, LIST_TENANTS, body, plane.operator)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "REQUEST_TOO_LARGE"
