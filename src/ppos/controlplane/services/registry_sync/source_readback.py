"""Reading a region's feed back from its registry, up to the mirror's cursor.

The same client (a fresh PREFLIGHT_JWT per call), the same page sizes, record
verification and metering as the sync: a read-back is paced by the region's
and the process's token buckets, so it never pushes a registry past the rate
the sync itself is allowed. Only what the comparison needs is kept: for each
revision the distinct payload digests the registry serves, in feed order, and
its cursor; records that fail verification are counted (with the first reason
seen per revision). Memory grows with the region: about 200 bytes a revision.

Cursors are opaque, so "up to the cursor" means: the pages from the start of
the feed until a record carries the mirror's cursor (records after it in that
page are dropped) or a page's next cursor is the mirror's cursor.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from ppos.controlplane.services.registry_sync.backoff import Backoff, is_retryable, retry_hint
from ppos.controlplane.services.registry_sync.client import RegistryClient, describe
from ppos.controlplane.services.registry_sync.metering import Meter
from ppos.controlplane.services.registry_sync.page_decoding import (
    PageFormatError,
    RawPage,
    parse_page,
)
from ppos.controlplane.services.registry_sync.verify import Accepted, Rejected, verify

T = TypeVar("T")
Key = tuple[str, int]
# A read-back is asked for by a person or a job waiting on it: fewer attempts than
# a sweep makes before it says the registry is unavailable.
READBACK_ATTEMPTS = 3


class SourceUnavailable(Exception):
    """The registry could not be read (after retries); the message says why."""


@dataclass(frozen=True)
class ReadbackSettings:
    page_records: int
    page_bytes: int
    max_payload_bytes: int
    call_timeout: float


@dataclass
class SourceIndex:
    """What the registry serves up to `cursor`, keyed by (job id, revision)."""

    cursor: str
    # Distinct digests per revision, in feed order; dict order is first appearance.
    digests: dict[Key, list[bytes]] = field(default_factory=dict)
    cursors: dict[Key, str] = field(default_factory=dict)
    # Revisions served only as records that fail verification: the first reason.
    unverifiable: dict[Key, str] = field(default_factory=dict)
    records: int = 0
    unverifiable_records: int = 0
    pages: int = 0
    reached_cursor: bool = False
    # Where the feed ended when it did not reach the cursor.
    ended_at: str = ""

    def add(self, verdicts: Sequence[Accepted | Rejected]) -> None:
        for item in verdicts:
            self.records += 1
            if isinstance(item, Rejected):
                self.unverifiable_records += 1
                if item.job_id:
                    self.unverifiable.setdefault((item.job_id, item.revision), item.reason)
                continue
            key = item.key
            held = self.digests.get(key)
            if held is None:
                self.digests[key] = [item.digest]
                self.cursors[key] = item.cursor
            elif item.digest not in held:
                held.append(item.digest)


def up_to_cursor(
    verdicts: list[Accepted | Rejected], cursor: str
) -> tuple[list[Accepted | Rejected], bool]:
    """The page's records up to the last one carrying `cursor`; whether it was there."""
    last = -1
    for index, item in enumerate(verdicts):
        if item.cursor == cursor:
            last = index
    if last < 0:
        return verdicts, False
    return verdicts[: last + 1], True


class SourceReader:
    """Reads one region's feed back, paced by the sync's meter."""

    def __init__(
        self,
        client: RegistryClient,
        meter: Meter,
        backoff: Backoff,
        settings: ReadbackSettings,
    ) -> None:
        self._client = client
        self._meter = meter
        self._backoff = Backoff(
            backoff.base, backoff.cap, min(backoff.attempts, READBACK_ATTEMPTS), backoff.random
        )
        self._settings = settings
        self.region = client.region
        self.address = client.address

    async def read(self, cursor: str) -> SourceIndex:
        """The feed up to `cursor` ("" reads nothing: the mirror holds nothing)."""
        index = SourceIndex(cursor, reached_cursor=not cursor)
        after = ""
        while not index.reached_cursor:
            page = await self._retried(functools.partial(self._page, after))
            verdicts = await asyncio.to_thread(self._verify, page.records)
            kept, found = up_to_cursor(verdicts, cursor)
            index.add(kept)
            index.pages += 1
            index.reached_cursor = found or page.next_cursor == cursor
            await asyncio.sleep(self._meter.debit(self.region, len(kept), page.wire_size))
            if index.reached_cursor:
                break
            if page.end_of_feed or not page.records:
                index.ended_at = page.next_cursor
                break
            after = page.next_cursor
        return index

    async def _page(self, after: str) -> RawPage:
        """One page; a malformed one is retried like a failed call."""
        raw = await self._client.page(
            after,
            page_size=self._settings.page_records,
            max_page_bytes=self._settings.page_bytes,
            deadline=self._settings.call_timeout,
        )
        return parse_page(raw)

    def _verify(self, records: list[bytes]) -> list[Accepted | Rejected]:
        limit = self._settings.max_payload_bytes
        return [verify(r, region=self.region, max_payload_bytes=limit) for r in records]

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        backoff = self._backoff
        last = ""
        for attempt in range(backoff.attempts):
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                last = f"ListJobChanges: {describe(exc)}"
                if not is_retryable(exc):
                    raise SourceUnavailable(last) from None
                delay = backoff.delay(attempt, retry_hint(exc))
            except PageFormatError as exc:
                last = f"ListJobChanges: malformed page: {exc}"
                delay = backoff.delay(attempt)
            if attempt + 1 < backoff.attempts:
                await asyncio.sleep(delay)
        raise SourceUnavailable(f"{last} (after {backoff.attempts} attempts)")
