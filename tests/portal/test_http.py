"""The portal over HTTP against a real plane: sign-in, sessions, CSRF, the credential
kept server-side, the plane's errors, two-step actions, exact payloads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.ops.worlds import REGION
from tests.portal.support import (
    EXACT_JOB,
    EXACT_PAYLOAD,
    OTHER_REGION,
    Operator,
    PortalWorld,
    operator_for,
    portal_world,
    text_of,
)


async def test_sign_in_sets_an_opaque_strict_cookie_and_shows_the_overview(
    world: PortalWorld,
) -> None:
    async with operator_for(world) as http:
        person = Operator(http)
        first = await person.get("/nodes?region=x")
        assert first.status_code == 303
        assert first.headers["location"] == "/signin?next=%2Fnodes%3Fregion%3Dx"

        wrong = await person.sign_in("not-the-token")
        assert wrong.status_code == 401
        assert "did not accept that credential" in wrong.text

        right = await person.sign_in(world.token)
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        assert cookie.startswith("ppos_session=")
        for flag in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert flag in cookie
        session_id = cookie.split(";")[0].split("=", 1)[1]
        assert len(session_id) >= 40
        assert world.token not in session_id

        page = await person.get("/")
        assert page.status_code == 200
        assert f'data-region="{REGION}"' in page.text
        assert "Registry sync by region" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]


async def test_sign_in_forms_from_elsewhere_and_changes_without_csrf_are_refused(
    world: PortalWorld, operator: Operator
) -> None:
    node_id = world.nodes["a"].node_id
    no_token = await operator.post(f"/nodes/{node_id}/uncordon", {}, csrf=False)
    assert no_token.status_code == 403
    wrong = await operator.post(f"/nodes/{node_id}/uncordon", {"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    other_site = await operator.post(
        f"/nodes/{node_id}/uncordon", {}, headers={"origin": "https://evil.example"}
    )
    assert other_site.status_code == 403
    ok = await operator.post(f"/nodes/{node_id}/uncordon", {})
    assert ok.status_code == 303

    async with operator_for(world) as http:
        forged = await http.post(
            "/signin", data={"credential": world.token, "signin_token": "guess"}
        )
        assert forged.status_code == 403
        assert (
            "set-cookie" not in forged.headers or "ppos_session" not in forged.headers["set-cookie"]
        )


async def test_sessions_end_on_idle_and_on_sign_out(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    async for world in portal_world(
        database_url, tmp_path, canary_token, secret_registry, idle_seconds=1.0
    ):
        async with operator_for(world) as http:
            person = Operator(http)
            assert (await person.sign_in(world.token)).status_code == 303
            assert (await person.get("/")).status_code == 200
            await asyncio.sleep(1.5)
            expired = await person.get("/")
            assert expired.status_code == 303
            assert expired.headers["location"].startswith("/signin")

            assert (await person.sign_in(world.token)).status_code == 303
            cookie = http.cookies.get("ppos_session")
            out = await person.post("/signout", {})
            assert out.status_code == 303
            http.cookies.set("ppos_session", cookie or "")  # a stolen copy is worth nothing
            assert (await person.get("/")).status_code == 303
            assert len(world.portal.app.state.portal.sessions) == 0


async def test_the_credential_never_leaves_the_portal(
    world: PortalWorld, operator: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with operator_for(world) as http:
        second = Operator(http)
        assert (await second.sign_in(world.token, "bob")).status_code == 303
        operator.seen += second.seen
    node_id = world.nodes["a"].node_id
    for path in (
        "/",
        "/nodes",
        f"/nodes/{node_id}",
        "/sync",
        "/sync/jobs",
        f"/sync/jobs/{REGION}/{EXACT_JOB}",
        f"/sync/jobs/{REGION}/{EXACT_JOB}/payload",
        "/sync/quarantine",
        "/governance",
        "/audit",
        "/outbox",
        "/admin-jobs",
        "/nodes/no-such-node",
    ):
        assert (await operator.get(path)).status_code in (200, 404), path
    await operator.post(f"/nodes/{node_id}/cordon", {"reason": "", "confirm_name": node_id})
    async with operator.http.stream("GET", "/events/overview") as events:
        first = b""
        async for chunk in events.aiter_bytes():
            first += chunk
            if b"event: overview" in first and first.endswith(b"\r\n\r\n"):
                break
    assert b"Registry sync by region" in first
    assert world.token.encode() not in first
    for response in operator.seen:
        assert world.token not in response.text, response.url
        assert world.token not in str(response.url)
        for name, value in response.headers.items():
            assert world.token not in value, name
    for cookie in operator.http.cookies.jar:
        assert world.token not in (cookie.value or "")
    assert world.token not in caplog.text
    assert "portal sign-in: operator bob" in caplog.text  # logged, without the credential


async def test_the_payload_view_is_the_exact_text_and_the_download_the_exact_bytes(
    world: PortalWorld, operator: Operator
) -> None:
    page = await operator.get(f"/sync/jobs/{REGION}/{EXACT_JOB}")
    assert page.status_code == 200
    shown = re.search(r'<pre class="payload" id="payload"[^>]*>\n(.*?)</pre>', page.text, re.S)
    assert shown is not None
    assert text_of(shown.group(1)) == EXACT_PAYLOAD.decode()
    assert "1e400" in text_of(shown.group(1))
    assert '"dup":1,"dup":2' in text_of(shown.group(1))
    assert "<script>alert" not in page.text  # escaped, never markup
    digest = hashlib.sha256(EXACT_PAYLOAD).hexdigest()
    assert f'<code id="payload-sha256">{digest}</code>' in page.text
    assert 'id="sha-check">matches' in page.text

    download = await operator.get(f"/sync/jobs/{REGION}/{EXACT_JOB}/payload")
    assert download.status_code == 200
    assert download.content == EXACT_PAYLOAD
    assert download.headers["x-content-sha256"] == digest
    assert "attachment" in download.headers["content-disposition"]
    registry = await asyncio.to_thread(world.cp.sync.get_job, REGION, EXACT_JOB)
    assert registry.record.canonical_payload == download.content


async def test_the_planes_refusals_show_status_code_and_violations(
    world: PortalWorld, operator: Operator
) -> None:
    missing = await operator.get("/nodes/node_nosuchnode")
    assert missing.status_code == 404
    assert "NOT_FOUND" in missing.text

    node_id = world.nodes["a"].node_id
    bad = await operator.post(
        f"/nodes/{node_id}/reimage",
        {"image": "", "digest": "not-a-digest", "reason": "x", "confirm_name": node_id},
    )
    assert bad.status_code == 400, bad.text
    assert "INVALID_ARGUMENT" in bad.text
    assert 'class="violations"' in bad.text


async def test_cordon_confirms_in_two_steps_with_the_nodes_name(
    world: PortalWorld, operator: Operator
) -> None:
    node_id = world.nodes["b"].node_id
    step_one = await operator.post(f"/nodes/{node_id}/cordon", {"reason": "disk <swap>"})
    assert step_one.status_code == 200
    assert 'name="confirm_name"' in step_one.text
    assert "disk &lt;swap&gt;" in step_one.text

    mistyped = await operator.post(
        f"/nodes/{node_id}/cordon", {"reason": "disk <swap>", "confirm_name": "node_other"}
    )
    assert mistyped.status_code == 422
    node = await asyncio.to_thread(world.cp.nodes.get_node, node_id)
    assert node.spec.schedulable, "a mistyped name must do nothing"

    done = await operator.post(
        f"/nodes/{node_id}/cordon", {"reason": "disk <swap>", "confirm_name": node_id}
    )
    assert done.status_code == 303
    node = await asyncio.to_thread(world.cp.nodes.get_node, node_id)
    assert not node.spec.schedulable
    assert node.spec.unschedulable_reason == "disk <swap>"
    detail = await operator.get(f"/nodes/{node_id}")
    audit = re.search(r'<table class="audit">(.*?)</table>', detail.text, re.S)
    assert audit is not None
    assert "operator:break-glass" in audit.group(1)  # signed in with the control token
    assert "disk &lt;swap&gt;" in audit.group(1)


async def test_nodes_filter_and_page_through_the_servers_tokens(
    world: PortalWorld, operator: Operator
) -> None:
    by_region = await operator.get(f"/nodes?region={OTHER_REGION}")
    assert world.nodes["c"].node_id in by_region.text
    assert world.nodes["a"].node_id not in by_region.text

    by_label = await operator.get("/nodes?labels=tier%3Dcore")
    rows = set(re.findall(r'data-node="([^"]+)"', by_label.text))
    assert rows == {world.nodes["b"].node_id, world.nodes["c"].node_id}

    pages: list[list[str]] = []
    path = "/nodes?page_size=1"
    while path:
        page = await operator.get(path)
        pages.append(re.findall(r'data-node="([^"]+)"', page.text))
        found = re.search(r'<a href="(/nodes\?[^"]*page_token=[^"]*)" rel="next">', page.text)
        path = found.group(1).replace("&amp;", "&") if found else ""
    seen = [node for nodes in pages for node in nodes]
    assert seen == sorted(n.node_id for n in world.nodes.values())  # id order, the plane's

    # Back from the last page, one page at a time, along the tokens followed.
    for expected in reversed(pages[:-1]):
        found = re.search(r'<a href="(/nodes\?[^"]*)" rel="prev">', page.text)
        assert found is not None, page.text
        page = await operator.get(found.group(1).replace("&amp;", "&"))
        assert re.findall(r'data-node="([^"]+)"', page.text) == expected
    assert 'rel="prev"' not in page.text  # the first page

    # Sorted by region, descending, from the heading's links: pages keep the order.
    page = await operator.get("/nodes?page_size=1")
    for _ in range(2):  # ascending, then the other way
        found = re.search(r'<a href="(/nodes\?[^"]*)" id="sort-region">', page.text)
        assert found is not None, page.text
        page = await operator.get(found.group(1).replace("&amp;", "&"))
    assert 'aria-sort="descending"' in page.text
    ordered: list[str] = []
    while True:
        ordered += re.findall(r'data-node="([^"]+)"', page.text)
        found = re.search(r'<a href="(/nodes\?[^"]*page_token=[^"]*)" rel="next">', page.text)
        if found is None:
            break
        assert "sort=region" in found.group(1)
        page = await operator.get(found.group(1).replace("&amp;", "&"))
    regions = {world.nodes[k].node_id: REGION for k in "ab"}
    regions[world.nodes["c"].node_id] = OTHER_REGION
    assert ordered == sorted(regions, key=lambda node: (regions[node], node), reverse=True)


async def test_the_quarantine_shows_escaped_text_hex_and_the_exact_bytes(
    world: PortalWorld, operator: Operator
) -> None:
    records = (await asyncio.to_thread(world.cp.sync.list_quarantine, region=REGION)).records
    assert len(records) == 1
    record = records[0]
    page = await operator.get(f"/sync/quarantine?region={REGION}")
    assert page.status_code == 200
    assert f'id="q-{record.quarantine_id}"' in page.text
    assert record.reason in page.text
    first_hex = " ".join(f"{b:02x}" for b in record.raw_record[:16])
    assert first_hex in page.text
    raw = await operator.get(f"/sync/quarantine/{REGION}/{record.quarantine_id}/raw")
    assert raw.status_code == 200
    assert raw.content == record.raw_record
    assert raw.headers["x-content-sha256"] == hashlib.sha256(record.raw_record).hexdigest()
    missing = await operator.get(f"/sync/quarantine/{REGION}/999999/raw")
    assert missing.status_code == 404


async def test_a_sweep_started_from_the_page_is_listed_with_its_progress(
    world: PortalWorld, operator: Operator
) -> None:
    started = await operator.post("/sync/sweeps", {"regions": REGION})
    assert started.status_code == 303
    sweeps = (await asyncio.to_thread(world.cp.sync.list_sweeps, limit=5)).sweeps
    newest = sweeps[0]
    assert newest.started_by  # the plane recorded who started it
    page = await operator.get("/sync")
    assert f"<code>{newest.sweep_id}</code>" in page.text
    unknown = await operator.post("/sync/sweeps", {"regions": "no-such-region"})
    assert unknown.status_code in (400, 404), unknown.text
    assert "violations" in unknown.text or "NOT_FOUND" in unknown.text


async def test_failed_sign_ins_are_throttled(world: PortalWorld) -> None:
    async with operator_for(world) as http:
        person = Operator(http)
        for _ in range(5):
            assert (await person.sign_in("wrong-credential")).status_code == 401
        held = await person.sign_in(world.token)
        assert held.status_code == 429
        assert "Too many failed sign-ins" in held.text


async def test_governance_shows_markup_as_text_and_resizes_and_pauses_queues(
    world: PortalWorld, operator: Operator
) -> None:
    hostile = '<script>alert("tenant")</script> & co'
    await asyncio.to_thread(
        world.cp.governance.provision_tenant,
        "acme",
        res.TenantSpec(display_name=hostile, default_region=REGION),
        queues=[gov.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=10))],
    )
    page = await operator.get("/governance")
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    cell = re.search(r'<td class="display-name">(.*?)</td>', page.text)
    assert cell is not None
    assert text_of(cell.group(1)) == hostile
    version = re.search(r'name="resource_version" value="([^"]+)"', page.text)
    assert version is not None

    resized = await operator.post(
        "/governance/queues/resize",
        {
            "tenant_id": "acme",
            "queue_id": "main",
            "capacity": "25",
            "reason": "peak season",
            "resource_version": version.group(1),
        },
    )
    assert resized.status_code == 303, resized.text
    queue = await asyncio.to_thread(world.cp.governance.get_queue, "acme", "main")
    assert queue.spec.capacity == 25

    stale = await operator.post(
        "/governance/queues/resize",
        {
            "tenant_id": "acme",
            "queue_id": "main",
            "capacity": "30",
            "reason": "again",
            "resource_version": version.group(1),
        },
    )
    assert stale.status_code == 409
    assert "FAILED_PRECONDITION" in stale.text

    paused = await operator.post(
        "/governance/queues/pause", {"tenant_id": "acme", "queue_id": "main", "reason": "audit"}
    )
    assert paused.status_code == 303
    queue = await asyncio.to_thread(world.cp.governance.get_queue, "acme", "main")
    assert queue.spec.state == res.QUEUE_STATE_PAUSED
    audit = await operator.get("/audit?kind=queue")
    assert "peak season" in audit.text

    commands = (await asyncio.to_thread(world.cp.governance.list_commands, limit=200)).commands
    assert commands, "the queue changes were sent to the region's gateway"
    outbox = await operator.get("/outbox")
    assert outbox.status_code == 200
    for command in commands:
        assert f"<code>{command.command_id}</code>" in outbox.text
    assert (await operator.get("/outbox?state=FAILED")).status_code == 200
    assert (await operator.get("/admin-jobs")).status_code == 200
