"""Simulated regional preflight registry: serves a change feed from record files.

The feed is the records of the `--records` files in the order given (and/or
`--synthetic N` generated ones), each a change with its own cursor. Pages
are written straight from pre-encoded bytes (see feed.py) so faults can put
anything on the wire, including bytes that are not a record at all.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from ppos.preflight.v1 import registry_service_pb2 as pb
from ppos.preflightsim import samples
from ppos.preflightsim.faultproxy import FaultProxy
from ppos.preflightsim.faults import (
    FaultConfigError,
    FaultPlan,
    FaultState,
    parse_malformed,
    parse_positions,
)
from ppos.preflightsim.feed import CursorError, Entry, Feed, page_trailer
from ppos.preflightsim.logs import get_logger
from ppos.preflightsim.records import read_file
from ppos.preflightsim.replies import Refusal, invalid_argument, unavailable

SERVICE_NAME = "ppos.preflight.v1.PreflightRegistryService"
DEFAULT_PAGE_SIZE = 100
DEFAULT_PAGE_BYTES = 4 * 1024 * 1024
MAX_PAGE_BYTES = 32 * 1024 * 1024
Context = grpc.aio.ServicerContext[Any, Any]
_log = get_logger("ppos.preflightsim.registry")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry")
    group.add_argument(
        "--records",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.jsonl",
        help="JSON Lines files of job records to serve, in feed order (format: records.py)",
    )
    group.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also serve N generated realistic records (deterministic), after the files",
    )
    group.add_argument(
        "--synthetic-size", type=int, default=4096, help="payload size of --synthetic records"
    )
    group.add_argument("--synthetic-seed", type=int, default=1)
    group.add_argument(
        "--release-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="jobs arrive over time: serve --release-initial records at first, then "
        "--release-batch more every SECONDS (0: all at once)",
    )
    group.add_argument("--release-initial", type=int, default=0, metavar="N")
    group.add_argument("--release-batch", type=int, default=1, metavar="N")
    group.add_argument(
        "--max-page-size", type=int, default=1000, help="largest page the registry serves"
    )
    faults = parser.add_argument_group("faults (see faults.py)")
    faults.add_argument("--faults", type=Path, help="JSON fault file, re-read when it changes")
    faults.add_argument("--fault-unavailable", type=int, default=0, metavar="N")
    faults.add_argument("--fault-slow", type=int, default=0, metavar="N")
    faults.add_argument("--fault-slow-seconds", type=float, default=2.0)
    faults.add_argument("--fault-drop", type=int, default=0, metavar="N")
    faults.add_argument("--fault-wrong-digest-at", type=parse_positions, default=frozenset())
    faults.add_argument("--fault-malformed-at", type=parse_malformed, default={})
    faults.add_argument("--fault-repeat-at", type=parse_positions, default=frozenset())
    faults.add_argument("--fault-conflict-at", type=parse_positions, default=frozenset())
    faults.add_argument("--fault-changed-at", type=parse_positions, default=frozenset())
    faults.add_argument("--fault-omit-at", type=parse_positions, default=frozenset())
    faults.add_argument("--fault-reorder", action="store_true")
    faults.add_argument("--fault-overlap", action="store_true")
    faults.add_argument("--fault-seed", type=int, default=0)
    faults.add_argument(
        "--fault-proxy",
        action="store_true",
        help="serve through a TCP proxy that can drop connections mid-page (for --fault-drop)",
    )


def plan_from_args(args: argparse.Namespace) -> FaultPlan:
    plan = FaultPlan(
        unavailable=args.fault_unavailable,
        slow=args.fault_slow,
        slow_seconds=args.fault_slow_seconds,
        drop=args.fault_drop,
        wrong_digest_at=args.fault_wrong_digest_at,
        malformed_at=dict(args.fault_malformed_at),
        repeat_at=args.fault_repeat_at,
        conflict_at=args.fault_conflict_at,
        changed_at=args.fault_changed_at,
        omit_at=args.fault_omit_at,
        reorder=args.fault_reorder,
        overlap=args.fault_overlap,
        seed=args.fault_seed,
    )
    plan.check()
    return plan


def load_feed(args: argparse.Namespace) -> Feed:
    feed = Feed(args.region)
    for path in args.records:
        feed.extend(read_file(path))
    if args.synthetic:
        feed.extend(
            samples.iter_records(
                region=args.region,
                count=args.synthetic,
                size=args.synthetic_size,
                seed=args.synthetic_seed,
                distinct=500,
            )
        )
    return feed


def _raw(data: bytes) -> bytes:
    return data


class RegistrySimulator:
    """The three RPCs of PreflightRegistryService over a feed, with faults."""

    def __init__(
        self,
        feed: Feed,
        faults: FaultState,
        *,
        max_page_size: int = 1000,
        release: tuple[int, float, int] | None = None,
    ) -> None:
        self.feed = feed
        self.faults = faults
        self.max_page_size = max_page_size
        self.proxy: FaultProxy | None = None
        self.calls: dict[str, int] = {}
        self._release = release  # (initial, every seconds, batch)
        self._started = time.monotonic()
        self._released_now()

    def _released_now(self) -> None:
        """Reveal the records due by now (computed from the clock: no timer task)."""
        if self._release is not None:
            initial, every, batch = self._release
            ticks = int((time.monotonic() - self._started) / every)
            self.feed.release(initial + ticks * batch)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetRegistryInfo": grpc.unary_unary_rpc_method_handler(
                    self.GetRegistryInfo,
                    request_deserializer=pb.GetRegistryInfoRequest.FromString,
                    response_serializer=pb.GetRegistryInfoResponse.SerializeToString,
                ),
                "ListJobChanges": grpc.unary_unary_rpc_method_handler(
                    self.ListJobChanges,
                    request_deserializer=pb.ListJobChangesRequest.FromString,
                    response_serializer=_raw,
                ),
                "StreamJobChanges": grpc.unary_stream_rpc_method_handler(
                    self.StreamJobChanges,
                    request_deserializer=pb.StreamJobChangesRequest.FromString,
                    response_serializer=_raw,
                ),
            },
        )

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        self._released_now()

    async def GetRegistryInfo(
        self, request: pb.GetRegistryInfoRequest, context: Context
    ) -> pb.GetRegistryInfoResponse:
        self._count("GetRegistryInfo")
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return pb.GetRegistryInfoResponse(
            region=self.feed.region,
            head_cursor=self.feed.head_cursor,
            total_changes=len(self.feed),
            max_page_size=self.max_page_size,
            server_time=now,
        )

    def _bounds(self, after_cursor: str, page_size: int, max_bytes: int) -> tuple[int, int, int]:
        problems = invalid_argument
        if page_size < 0:
            raise problems("page_size", "must not be negative")
        if max_bytes < 0:
            raise problems("max_page_bytes", "must not be negative")
        try:
            after = self.feed.position_of(after_cursor)
        except CursorError as exc:
            raise problems("after_cursor", str(exc), reason="UNKNOWN_CURSOR") from None
        size = min(page_size or DEFAULT_PAGE_SIZE, self.max_page_size)
        limit = min(max_bytes or DEFAULT_PAGE_BYTES, MAX_PAGE_BYTES)
        return after, size, limit

    def _page(self, after: int, size: int, limit: int) -> tuple[bytes, int, bool]:
        entries = self.feed.page(after, size, limit)
        previous: Entry | None = self.feed.entry(after) if after else None
        wires = self.faults.page_wires(entries, previous, self.feed.region)
        last = entries[-1].position if entries else after
        end = last >= len(self.feed)
        next_cursor = self.feed.cursor(last) if last else ""
        body = b"".join(wires) + page_trailer(next_cursor, end, len(self.feed) - last)
        return body, last, end

    async def _call_faults(self, context: Context) -> int | None:
        """Apply the call faults; the bytes after which to drop the connection, if any."""
        faults = self.faults.next_call()
        if faults.unavailable:
            _log.info("preflightsim.fault", kind="unavailable")
            raise unavailable("simulated outage", retry_after_seconds=0.1)
        if faults.slow_seconds:
            _log.info("preflightsim.fault", kind="slow", seconds=faults.slow_seconds)
            await asyncio.sleep(faults.slow_seconds)
        if faults.drop_after_bytes is not None:
            if self.proxy is None:
                _log.warning("preflightsim.fault_skipped", kind="drop", why="no --fault-proxy")
                return None
            return faults.drop_after_bytes
        return None

    async def ListJobChanges(self, request: pb.ListJobChangesRequest, context: Context) -> bytes:
        self._count("ListJobChanges")
        try:
            after, size, limit = self._bounds(
                request.after_cursor, request.page_size, request.max_page_bytes
            )
            drop = await self._call_faults(context)
        except Refusal as exc:
            status = exc.to_grpc_status()
            await context.abort(status.code, status.details, status.trailing_metadata)
        body, _, _ = self._page(after, size, limit)
        if drop is not None and self.proxy is not None:
            self.proxy.cut(context.peer(), drop)
            _log.info("preflightsim.fault", kind="drop", page_bytes=len(body))
        return body

    async def StreamJobChanges(
        self, request: pb.StreamJobChangesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        self._count("StreamJobChanges")
        try:
            after, size, limit = self._bounds(
                request.after_cursor, request.page_size, request.max_page_bytes
            )
            drop = await self._call_faults(context)
        except Refusal as exc:
            status = exc.to_grpc_status()
            await context.abort(status.code, status.details, status.trailing_metadata)
        first = True
        while True:
            body, after, end = self._page(after, size, limit)
            if drop is not None and self.proxy is not None and not first:
                self.proxy.cut(context.peer(), drop)  # mid-stream, after the first page
                _log.info("preflightsim.fault", kind="drop", page_bytes=len(body))
            yield body
            first = False
            if end:
                return


def build(args: argparse.Namespace) -> RegistrySimulator:
    """Load the feed and the faults (blocking: files, generation)."""
    started = time.perf_counter()
    feed = load_feed(args)
    if args.release_every < 0 or args.release_initial < 0 or args.release_batch < 1:
        raise FaultConfigError("--release-every/--release-initial >= 0, --release-batch >= 1")
    release = (
        (args.release_initial, args.release_every, args.release_batch)
        if args.release_every > 0
        else None
    )
    simulator = RegistrySimulator(
        feed,
        FaultState(plan_from_args(args), args.faults),
        max_page_size=args.max_page_size,
        release=release,
    )
    _log.info(
        "preflightsim.feed_loaded",
        region=feed.region,
        changes=feed.loaded,
        seconds=round(time.perf_counter() - started, 3),
    )
    return simulator


def register(server: grpc.aio.Server, args: argparse.Namespace) -> RegistrySimulator:
    simulator = build(args)
    server.add_generic_rpc_handlers((simulator.handler(),))
    return simulator
