"""The portal in a real browser: Debian's chromium, headless, driven by Playwright.

Skipped (with the reason) only where /usr/bin/chromium is absent; `make setup` and
`.ci/run` install it. The async API is used because the plane and the portal run in
the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from tests.ops.support import DIGEST, IMAGE
from tests.ops.worlds import REGION
from tests.portal.support import EXACT_JOB, EXACT_PAYLOAD, OTHER_REGION, PortalWorld
from tests.support.operators import add_operator

CHROMIUM = Path("/usr/bin/chromium")
# scripts/portal-screenshots.sh sets this to docs/images/portal: the run then saves the
# pages docs/portal.md shows.
SCREENSHOTS = os.environ.get("PPOS_PORTAL_SCREENSHOTS", "")
VIEWPORT = {"width": 1100, "height": 720}
AXE = Path(__file__).resolve().parents[2] / "node_modules/axe-core/axe.min.js"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium): run make setup",
)

if CHROMIUM.exists():
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


class Watch:
    """What a page did that it must not: dialogs (an XSS firing), CSP violations."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.csp: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)


async def axe_violations(page: Page) -> list[str]:
    """Serious and critical axe-core findings on the page as it is now."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


async def sign_in(page: Page, world: PortalWorld) -> None:
    await page.goto(world.url + "/")
    await expect(page).to_have_url(world.url + "/signin?next=%2F")
    assert await axe_violations(page) == []
    await page.get_by_label("Your name").fill("ada")
    await page.get_by_label("Operator credential").fill(world.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(world.url + "/")
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


async def shoot(page: Page, name: str) -> None:
    """The page as it is now, into SCREENSHOTS/name.png, when screenshots are asked for."""
    if SCREENSHOTS:
        await asyncio.to_thread(Path(SCREENSHOTS).mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


async def credential_absent(page: Page, context: BrowserContext, token: str) -> None:
    assert token not in await page.content()
    assert token not in page.url
    storage = await page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert token not in storage
    for cookie in await context.cookies():
        assert token not in cookie["value"]


async def test_an_operator_signs_in_watches_filters_cordons_and_downloads(
    world: PortalWorld, chromium: Browser, tmp_path: Path
) -> None:
    context = await chromium.new_context(accept_downloads=True, viewport=VIEWPORT)
    page = await context.new_page()
    watch = Watch(page)
    await sign_in(page, world)
    await expect(page.locator(f'tr[data-region="{REGION}"]').first).to_be_visible()
    # uPlot (served by the portal) draws the region's growth chart.
    await expect(page.locator(".chart canvas").first).to_be_attached()
    assert await axe_violations(page) == []
    await shoot(page, "overview")
    session = next(c for c in await context.cookies() if c["name"] == "ppos_session")
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"

    # A heartbeat's change shows in the open nodes table without a reload.
    await page.get_by_role("link", name="Nodes").click()
    node_a = world.nodes["a"]
    cell = page.locator(f'tr[data-node="{node_a.node_id}"] td.slots')
    await expect(cell).to_have_text("1/4")
    await asyncio.to_thread(
        node_a.heartbeat, ready=True, image=IMAGE, digest=DIGEST, slots_in_use=3
    )
    await expect(cell).to_have_text("3/4", timeout=3000)
    assert await axe_violations(page) == []
    await shoot(page, "nodes")

    await page.get_by_label("Region").fill(OTHER_REGION)
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tr[data-node]")).to_have_count(1)
    await expect(page.locator(f'tr[data-node="{world.nodes["c"].node_id}"]')).to_be_visible()

    # Cordon node b through the two-step confirmation; the reason is hostile markup.
    node_b = world.nodes["b"].node_id
    reason = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'
    await page.goto(f"{world.url}/nodes/{node_b}")
    assert await axe_violations(page) == []
    await page.get_by_label("Reason to cordon").fill(reason)
    await page.get_by_role("button", name="Cordon…").click()
    await expect(page.get_by_role("heading", name=f"Cordon node {node_b}?")).to_be_visible()
    assert await axe_violations(page) == []
    await shoot(page, "confirm")
    await page.get_by_label("Type the node's name").fill(node_b)
    await page.get_by_role("button", name=f"Cordon {node_b}").click()
    await expect(page.get_by_role("status")).to_have_text("Cordon done")
    await expect(page.locator("#schedulable")).to_have_text("no: " + reason)
    node = await asyncio.to_thread(world.cp.nodes.get_node, node_b)
    assert not node.spec.schedulable
    assert node.spec.unschedulable_reason == reason

    # A sweep started from the page is listed there, with its progress.
    await page.get_by_role("link", name="Registry sync").click()
    assert await axe_violations(page) == []
    await page.get_by_label("Regions (empty: all)").fill(REGION)
    await page.get_by_role("button", name="Start a sweep").click()
    sweep = (await asyncio.to_thread(world.cp.sync.list_sweeps, limit=1)).sweeps[0]
    row = page.locator("#sweeps tr", has_text=sweep.sweep_id)
    await expect(row.locator("td.state")).to_have_text("SUCCEEDED", timeout=5000)
    await shoot(page, "sync")

    # A synced job: the exact payload shown, and downloaded byte for byte.
    await page.get_by_role("link", name="Synced jobs").click()
    await page.get_by_label("Job id").fill(EXACT_JOB)
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=EXACT_JOB).click()
    await expect(page.locator("#sha-check")).to_have_text("matches")
    shown = await page.locator("#payload").text_content()
    assert shown == EXACT_PAYLOAD.decode()
    assert await axe_violations(page) == []
    await shoot(page, "synced-job")
    async with page.expect_download() as info:
        await page.locator("#download-payload").click()
    download = await info.value
    saved = tmp_path / "payload.bin"
    await download.save_as(saved)
    registry = await asyncio.to_thread(world.cp.sync.get_job, REGION, EXACT_JOB)
    assert saved.read_bytes() == registry.record.canonical_payload == EXACT_PAYLOAD

    # The audit log's last page gets new entries live (WatchAuditEntries).
    await page.goto(world.url + "/audit")
    node_c = world.nodes["c"].node_id
    await asyncio.to_thread(world.cp.nodes.cordon, node_c, reason="seen <live>")
    await expect(page.locator("#audit-rows tr", has_text="seen <live>")).to_have_count(1)
    assert await axe_violations(page) == []

    # A policy's edit previewed: the jobs it would act on, each a link to the job.
    policy = res.GovernancePolicySpec(
        trigger_state=job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
        actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)],
    )
    await asyncio.to_thread(world.cp.governance.set_policy, "fre", policy)
    await page.goto(world.url + "/governance/policies/fre")
    assert await axe_violations(page) == []
    await page.get_by_role("button", name="Preview the jobs it would act on").click()
    await expect(page.locator("table.decisions a", has_text="fix_1779116603391")).to_be_visible()
    assert await axe_violations(page) == []
    await shoot(page, "policy-preview")
    await asyncio.to_thread(
        world.cp.governance.create_partner, "printhaus", display_name="Printhaus", region=REGION
    )

    for path in (
        "/alerts",
        "/governance/partners",
        "/decisions",
        "/sync/quarantine",
        "/governance",
        "/audit",
        "/sync/jobs",
        "/outbox",
        "/admin-jobs",
        f"/nodes?region={OTHER_REGION}",
    ):
        await page.goto(world.url + path)
        assert await axe_violations(page) == [], path
        await credential_absent(page, context, world.token)
        if path == "/alerts":
            await shoot(page, "alerts")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(world.url + "/signin")
    await page.goto(world.url + "/nodes")
    await expect(page).to_have_url(world.url + "/signin?next=%2Fnodes")
    assert watch.dialogs == [], "markup from an operator or a registry ran"
    assert watch.csp == [], json.dumps(watch.csp)
    await context.close()
    await a_viewer_sees_no_action(world, chromium)


async def a_viewer_sees_no_action(world: PortalWorld, chromium: Browser) -> None:
    """A named viewer signs in with their own credential: the same pages, no action."""
    viewer = await add_operator(world.world.plane, "vera", "viewer")
    context = await chromium.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    await page.goto(world.url + "/signin")
    await page.get_by_label("Your name").fill("vera")
    await page.get_by_label("Operator credential").fill(viewer.credential)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as vera (viewer)")).to_be_visible()
    node_b = world.nodes["b"].node_id
    for path in (f"/nodes/{node_b}", "/sync", "/governance", "/nodes?sort=region&desc=1"):
        await page.goto(world.url + path)
        await expect(page.locator("main h1")).to_be_visible()
        assert await page.locator("main form[method=post]").count() == 0, path
        assert await axe_violations(page) == [], path
    await credential_absent(page, context, viewer.credential)
    await context.close()
