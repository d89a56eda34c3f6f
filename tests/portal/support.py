"""The portal's test world: a real plane syncing a simulated region, real nodes, and
the portal serving on a free loopback port; plus an HTTP operator that signs in."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ppos.controlplane.client import ControlPlane, NodeAgentClient
from ppos.controlplane.core.logging import SecretRegistry
from ppos.portal.app import RunningPortal, start_portal
from tests.ops.support import control_plane, make_node
from tests.ops.worlds import REGION, World, running_world
from tests.registry_sync.harness import ODD_SAMPLES

# What a JSON parser would change: a number beyond double range, a 30-digit integer,
# a repeated key, markup, and a raw right-to-left override (U+202E, as UTF-8 bytes).
EXACT_JOB = "job_portal_exact"
EXACT_PAYLOAD = (
    b'{"jobId":"job_portal_exact","huge":1e400,"big":123456789012345678901234567890,'
    b'"dup":1,"dup":2,"tiny":1E-400,"markup":"<script>alert(1)</script>",'
    b'"rlo":"a\xe2\x80\xaeb", "spaced" :  [ 1 ,2 ]}'
)
OTHER_REGION = "us-east-1"


def exact_record_file(tmp_path: Path) -> Path:
    envelope = (
        b'{"jobId":"job_portal_exact","tenantId":"acme-print","queueId":"acme-print-offset",'
        b'"revision":1,"status":"COMPLETED","governanceState":"COMPLETED_WITH_FINDINGS",'
        b'"canonicalPayload":' + EXACT_PAYLOAD + b"}\n"
    )
    path = tmp_path / "portal-exact.jsonl"
    path.write_bytes(envelope)
    return path


@dataclass
class PortalWorld:
    world: World
    portal: RunningPortal
    cp: ControlPlane
    nodes: dict[str, NodeAgentClient] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.portal.url.rstrip("/")

    @property
    def token(self) -> str:
        return self.world.plane.token


async def portal_world(
    database_url: str,
    tmp_path: Path,
    token: str,
    secrets: SecretRegistry,
    **portal_options: Any,
) -> AsyncIterator[PortalWorld]:
    """The region synced once (one record sent malformed, so quarantined), three nodes
    (two in REGION, one in OTHER_REGION), and the portal for the plane."""
    records = [exact_record_file(tmp_path), ODD_SAMPLES]
    async for world in running_world(
        database_url,
        tmp_path,
        token,
        secrets,
        sim_options={"records": records, "extra": ["--fault-malformed-at", "3"]},
    ):
        await world.synced()
        cp = control_plane(world.plane)
        made = {}
        for name, region, labels in (
            ("a", REGION, {"tier": "edge"}),
            ("b", REGION, {"tier": "core"}),
            ("c", OTHER_REGION, {"tier": "core"}),
        ):
            made[name] = await asyncio.to_thread(make_node, cp, region=region, labels=labels)
        options = {"live_interval": 0.3, **portal_options}
        portal = await start_portal("127.0.0.1:0", world.plane.address, **options)
        try:
            yield PortalWorld(world, portal, cp, made)
        finally:
            await portal.stop()
            cp.close()


_SIGNIN_TOKEN = re.compile(r'name="signin_token" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Operator:
    """An HTTP client acting as an operator's browser (cookies kept, no redirects
    followed so each answer can be checked)."""

    http: httpx.AsyncClient
    csrf: str = ""
    seen: list[httpx.Response] = field(default_factory=list)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        self.seen.append(response)
        found = (
            _CSRF.search(response.text)
            if response.headers.get("content-type", "").startswith("text/html")
            else None
        )
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, data: Mapping[str, str], *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        body = dict(data)
        if csrf:
            body.setdefault("csrf_token", self.csrf)
        response = await self.http.post(path, data=body, **kwargs)
        self.seen.append(response)
        return response

    async def sign_in(self, credential: str, operator: str = "ada") -> httpx.Response:
        form = await self.get("/signin")
        found = _SIGNIN_TOKEN.search(form.text)
        assert found, form.text
        response = await self.post(
            "/signin",
            {"signin_token": found.group(1), "credential": credential, "operator": operator},
            csrf=False,
        )
        if response.status_code == 303:
            await self.get("/")  # picks up the session's CSRF token
        return response


def operator_for(world: PortalWorld) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=world.url, follow_redirects=False, timeout=20)


def text_of(fragment: str) -> str:
    """The text a browser shows for an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]*>", "", fragment))
