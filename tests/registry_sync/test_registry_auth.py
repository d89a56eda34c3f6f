"""The simulated registry takes nothing but a fresh PREFLIGHT_JWT; the sync sends nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import jwt
import pytest

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.claims import request_sha256
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.peers import registry_audience
from ppos.controlplane.security.tokens import TokenMinter
from ppos.preflight.v1 import registry_service_pb2 as registry_pb
from ppos.preflight.v1 import registry_service_pb2_grpc as registry_grpc
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import ODD_SAMPLES, call_error

REGION = "eu-west-1"
LIST = "/ppos.preflight.v1.PreflightRegistryService/ListJobChanges"
INFO = "/ppos.preflight.v1.PreflightRegistryService/GetRegistryInfo"


async def test_registry_refuses_anything_but_a_preflight_jwt_for_it(
    world: WorldFactory, tmp_path: Path, canary_token: str
) -> None:
    w = await world({REGION: {"records": [ODD_SAMPLES]}, "us-east-1": {"records": [ODD_SAMPLES]}})
    minter = w.plane.runtime.minter
    foreign = TokenMinter(
        KeyRing.from_directory(tmp_path / "other-keys"), issuer="ppos-control-plane"
    )

    empty = registry_pb.ListJobChangesRequest()
    two = registry_pb.ListJobChangesRequest(page_size=2)

    def token(  # type: ignore[no-untyped-def]
        audience: str = registry_audience(REGION), method: str = LIST, by=minter, bound=empty
    ) -> str:
        return str(
            by.mint_preflight(
                subject="ppos.controlplane.registrysync",
                audience=audience,
                method=method,
                request_id="req_test",
                request_sha256=request_sha256(bound.SerializeToString()) if bound else "",
            )
        )

    refused = {
        "no credential": (),
        "the control token": (("authorization", f"Bearer {canary_token}"),),
        "another region's audience": (
            ("authorization", f"Bearer {token(registry_audience('us-east-1'))}"),
        ),
        "another method": (("authorization", f"Bearer {token(method=INFO)}"),),
        "a key the plane does not publish": (("authorization", f"Bearer {token(by=foreign)}"),),
        "not a bearer token": (("authorization", f"Basic {token()}"),),
        "a token minted for another request": (("authorization", f"Bearer {token(bound=two)}"),),
        "a token bound to no request": (("authorization", f"Bearer {token(bound=None)}"),),
        "two credentials": (
            ("authorization", f"Bearer {token()}"),
            ("authorization", f"Bearer {token()}"),
        ),
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{w.sims[REGION].port}") as channel:
        stub = registry_grpc.PreflightRegistryServiceStub(channel)
        for what, metadata in refused.items():
            error = await call_error(stub.ListJobChanges(empty, metadata=metadata))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, what
            assert canary_token not in (error.details() or "")
        served_before = w.sims[REGION].registry.calls.get("ListJobChanges", 0)
        reply = await stub.ListJobChanges(
            two, metadata=(("authorization", f"Bearer {token(bound=two)}"),)
        )
        assert len(reply.records) == 2
    # The refused calls never reached the registry's handler.
    assert served_before == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sync_calls_carry_only_a_fresh_preflight_jwt(
    world: WorldFactory, tmp_path: Path, canary_token: str
) -> None:
    log = tmp_path / "registry-calls.jsonl"
    w = await world(
        {REGION: {"records": [ODD_SAMPLES], "extra": ["--record-metadata", str(log)]}},
        env={"PPOS_SYNC_PAGE_RECORDS": "3"},
    )
    sweep = await w.sweep()
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED
    assert sweep.pages >= 4
    assert log.stat().st_mode & 0o777 == 0o600  # it holds live tokens
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["method"] for c in calls} == {INFO, LIST}
    jtis = set()
    for call in calls:
        metadata = call["metadata"]
        assert canary_token not in json.dumps(metadata)
        credentials = [
            v for k, v in metadata if k in ("authorization", "cookie", "x-control-token")
        ]
        assert len(credentials) == 1
        assert credentials[0].startswith("Bearer ")
        claims = jwt.decode(credentials[0][len("Bearer ") :], options={"verify_signature": False})
        assert claims["aud"] == registry_audience(REGION)
        assert claims["sub"] == "ppos.controlplane.registrysync"
        assert claims["mth"] == call["method"]
        assert claims["exp"] - claims["iat"] <= 60
        assert claims["rid"] == sweep.sweep_id  # the sweep is the request these calls serve
        jtis.add(claims["jti"])
    assert len(jtis) == len(calls)  # minted per call, never reused


async def test_sync_rpcs_require_the_operator_or_a_peer(world: WorldFactory) -> None:
    w = await world({REGION: {"records": [ODD_SAMPLES]}})
    error = await call_error(w.stub.StartSweep(pb.StartSweepRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await call_error(
        w.stub.ListSyncedJobs(
            pb.ListSyncedJobsRequest(),
            metadata=(("authorization", "Bearer not-the-token-at-all-0123456789"),),
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # A peer service (governance) pages synced jobs with its own PREFLIGHT_JWT.
    channel = w.plane.runtime.peers.channel("registrysync", caller="governance")
    reply = await pb_grpc.RegistrySyncServiceStub(channel).ListSyncStatuses(
        pb.ListSyncStatusesRequest()
    )
    assert [s.region for s in reply.statuses] == [REGION]
