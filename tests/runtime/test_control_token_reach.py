"""Only the edge holds the control token, and only as a digest: no object a
service can reach holds the token's text or bytes once the plane is up."""

from __future__ import annotations

import asyncio
import gc
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as gpb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as ggrpc
from tests.support.servers import start_plane, stop_plane

# More objects than a plane holds; reaching it means the walk did not finish.
MAX_OBJECTS = 3_000_000


def holders(roots: Iterable[Any], token: str) -> list[str]:
    """Paths (by type) from `roots` to each str/bytes holding `token`.

    Follows gc.get_referents, bounded to the state objects hold: not into
    modules or functions' globals (the program, not its state: from there every
    object of the process is reachable) nor into the event loop (which reaches
    the test's own frames); a function's closure and defaults and a frame's
    locals are followed.
    """
    text, raw = token, token.encode()
    parent: dict[int, int | None] = {}
    keep: dict[int, Any] = {}  # keeps every visited object alive: ids stay unique
    stack: list[tuple[Any, int | None]] = [(root, None) for root in roots]
    found: list[str] = []
    while stack:
        obj, via = stack.pop()
        if id(obj) in keep:
            continue
        keep[id(obj)] = obj
        parent[id(obj)] = via
        assert len(keep) < MAX_OBJECTS, "the walk did not finish"
        if isinstance(obj, str):
            if text in obj:
                found.append(_path(id(obj), parent, keep))
            continue
        if isinstance(obj, (bytes, bytearray)):
            if raw in obj:
                found.append(_path(id(obj), parent, keep))
            continue
        stack += [(child, id(obj)) for child in _state_of(obj)]
    return found


def _state_of(obj: Any) -> list[Any]:
    if isinstance(obj, (types.ModuleType, asyncio.AbstractEventLoop)):
        return []
    if isinstance(obj, types.FunctionType):
        return [obj.__closure__, obj.__defaults__, obj.__kwdefaults__]
    if isinstance(obj, types.FrameType):
        return [obj.f_locals]
    return list(gc.get_referents(obj))


def _path(at: int, parent: dict[int, int | None], keep: dict[int, Any]) -> str:
    steps: list[str] = []
    node: int | None = at
    while node is not None:
        steps.append(type(keep[node]).__qualname__)
        node = parent[node]
    return " <- ".join(steps)


class _Holder:
    def __init__(self, value: object) -> None:
        self.nested = {"deep": [(value,)]}


def test_the_walk_finds_a_token_held_as_text_bytes_or_in_a_closure() -> None:
    token = "ppos_walk_" + "x" * 40
    captured = token.encode()

    def closure() -> bytes:
        return captured

    assert holders([_Holder(token)], token)
    assert holders([_Holder(f"Bearer {token}")], token)
    assert holders([_Holder(closure)], token)
    assert not holders([_Holder("nothing here")], token)


async def test_no_object_a_service_reaches_holds_the_control_token(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    plane = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
    )
    try:
        # The edge has checked the token (and refused a wrong one) at least once.
        stub = ggrpc.GovernanceServiceStub(plane.channel)
        await stub.ListTenants(gpb.ListTenantsRequest(), metadata=plane.operator)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListTenants(
                gpb.ListTenantsRequest(), metadata=(("authorization", "Bearer wrong" * 4),)
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        roots = [*plane.server.modules, plane.server.runtime]
        assert plane.server.modules
        assert holders(roots, canary_token) == []
        # The server (settings, log redactor, edge) holds digests only.
        assert holders([plane.server], canary_token) == []
        # The walk sees what the test's own record of the plane holds.
        assert holders([plane], canary_token)
    finally:
        await stop_plane(plane)
