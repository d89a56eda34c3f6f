"""WatchNodes streams their clients cancel, at any point, leave no subscriber behind.

A subscriber left registered after its call ended would be counted toward the
subscriber limit for good and held in every fan-out. The cycles cancel before
the server sent headers, right after them, while a snapshot larger than one
message is being written, and after its first message; the subscribers metric
(scraped from the metrics endpoint, as an operator sees it) and the hub's own
count must both be back where they started.

Over a real connection the instant a cancel lands is a matter of timing, so the
two moments that once leaked (headers pending, first write pending) are also
pinned in-process: a real hub on a real database, and a call context that parks
at the chosen step until its task is cancelled.

The other streams (WatchSyncStatus, WatchAuditEntries, StreamNodeCommands)
register nothing with a hub, but each wait of theirs must not leave a task or a
waiter on the shutdown event behind: after their cancel cycles the process is
back to the tasks and shutdown waiters it had before.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as sync_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as sync_grpc
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.service import NodeRegistryModule
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.services.node_registry.watch_stream import serve
from ppos.controlplane.storage.database import Database
from tests.node_registry.conftest import PlaneFactory
from tests.node_registry.helpers import ready_node
from tests.node_registry.watching import Watcher
from tests.support.polling import eventually
from tests.support.servers import RunningPlane

CYCLES = 1200
IN_FLIGHT = 4
# Nodes with 64 long labels each: the snapshot is larger than one 1 MB message,
# so a stream is cancelled while its first message is still being written.
NODES = 48
LABELS = {f"{'p' * 60}.example/{'k' * 40}-{i}": "v" * 63 for i in range(64)}
POINTS = ("at_once", "before_headers", "after_headers", "mid_snapshot", "after_first_message")


def _hub(plane: RunningPlane) -> WatchHub:
    (module,) = [m for m in plane.server.modules if isinstance(m, NodeRegistryModule)]
    return module.hub


def _subscribers_metric(plane: RunningPlane) -> float:
    assert plane.server.metrics is not None
    url = f"http://127.0.0.1:{plane.server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ppos_watch_subscribers ")]
    return float(line.split()[1])


async def _scrape(plane: RunningPlane) -> float:
    return await asyncio.to_thread(_subscribers_metric, plane)


async def _time_to_headers(stub: pb_grpc.NodeRegistryServiceStub, plane: RunningPlane) -> float:
    """The median time from opening a stream to its headers (where the cancels aim)."""
    times = []
    for _ in range(21):
        started = time.perf_counter()
        call = stub.WatchNodes(pb.WatchNodesRequest(), metadata=plane.operator)
        await call.initial_metadata()
        times.append(time.perf_counter() - started)
        call.cancel()
    return statistics.median(times)


async def _cycle(
    stub: pb_grpc.NodeRegistryServiceStub,
    plane: RunningPlane,
    point: str,
    headers_in: float,
    rng: random.Random,
) -> None:
    call = stub.WatchNodes(pb.WatchNodesRequest(), metadata=plane.operator)
    try:
        if point == "before_headers":
            # Around the moment the server registers the stream and sends headers.
            await asyncio.sleep(headers_in * rng.uniform(0.3, 1.2))
        elif point == "after_headers":
            await call.initial_metadata()
        elif point == "mid_snapshot":
            await call.initial_metadata()
            await asyncio.sleep(rng.uniform(0, 0.002))
        elif point == "after_first_message":
            await call.read()
    finally:
        call.cancel()


async def test_open_then_cancel_cycles_leave_no_subscriber(make_plane: PlaneFactory) -> None:
    plane = await make_plane(PPOS_METRICS_LISTEN="127.0.0.1:0")
    for _ in range(NODES):
        await ready_node(plane, labels=LABELS)
    hub = _hub(plane)
    before = await _scrape(plane)

    # The metric counts a stream that is open (so a count of 0 below means something).
    watcher = Watcher(plane.channel, plane.operator)
    await watcher.snapshot()
    assert await _scrape(plane) == before + 1
    assert hub.subscriber_count == 1
    watcher.call.cancel()
    await eventually(lambda: hub.subscriber_count, lambda n: n == 0)

    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    headers_in = await _time_to_headers(stub, plane)
    rng = random.Random(18)
    pending: set[asyncio.Task[None]] = set()
    for index in range(CYCLES):
        point = POINTS[index % len(POINTS)] if index % 2 else rng.choice(POINTS)
        pending.add(asyncio.create_task(_cycle(stub, plane, point, headers_in, rng)))
        if len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    for task in asyncio.as_completed(pending):
        await task

    await eventually(lambda: hub.subscriber_count, lambda n: n == 0)
    await eventually(lambda: _scrape(plane), lambda value: value == before)

    # The limit still admits as many streams as before: nothing phantom holds a place.
    again = Watcher(plane.channel, plane.operator)
    await again.snapshot()
    assert hub.subscriber_count == 1
    again.call.cancel()
    await eventually(lambda: hub.subscriber_count, lambda n: n == 0)


class _ParkedCall:
    """A call context that parks at one step (`headers` or `write`) until cancelled."""

    def __init__(self, park_at: str) -> None:
        self.park_at = park_at
        self.parked = asyncio.Event()

    async def send_initial_metadata(self, metadata: object) -> None:
        await self._step("headers")

    async def write(self, message: bytes) -> None:
        await self._step("write")

    async def _step(self, step: str) -> None:
        if step == self.park_at:
            self.parked.set()
            await asyncio.Event().wait()


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[WatchHub]:
    db = Database(database_url, pool_size=2)
    watch_hub = WatchHub(db, NodeRegistrySettings(), asyncio.Event())
    await watch_hub.start()
    yield watch_hub
    await watch_hub.stop()
    db.close()


@pytest.mark.parametrize("park_at", ["headers", "write"])
async def test_a_stream_cancelled_at_its_first_steps_unregisters(
    hub: WatchHub, park_at: str
) -> None:
    call = _ParkedCall(park_at)
    subscribe = functools.partial(hub.subscribe, NodeQuery(), 0, 10.0, call, "req_test")
    stream = asyncio.create_task(serve(hub, subscribe, call))
    await asyncio.wait_for(call.parked.wait(), 15)
    assert hub.subscriber_count == 1
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream
    assert hub.subscriber_count == 0


def _shutdown_waiters(plane: RunningPlane) -> int:
    return len(plane.runtime.shutdown._waiters or ())


STREAMS = ("WatchSyncStatus", "WatchAuditEntries", "StreamNodeCommands")


@pytest.mark.parametrize("stream", STREAMS)
async def test_the_other_streams_leave_no_task_or_waiter_behind(
    make_plane: PlaneFactory, stream: str
) -> None:
    plane = await make_plane(
        PPOS_SYNC_POLL_INTERVAL="10ms",
        PPOS_GOVERNANCE_WATCH_POLL="10ms",
        PPOS_HEARTBEAT_INTERVAL="10ms",
    )
    node = await ready_node(plane)
    sync = sync_grpc.RegistrySyncServiceStub(plane.channel)
    governance = gov_grpc.GovernanceServiceStub(plane.channel)
    nodes = pb_grpc.NodeRegistryServiceStub(plane.channel)
    opens = {
        "WatchSyncStatus": lambda: sync.WatchSyncStatus(
            sync_pb.WatchSyncStatusRequest(), metadata=plane.operator
        ),
        "WatchAuditEntries": lambda: governance.WatchAuditEntries(
            gov_pb.WatchAuditEntriesRequest(), metadata=plane.operator
        ),
        "StreamNodeCommands": lambda: nodes.StreamNodeCommands(
            pb.StreamNodeCommandsRequest(), metadata=node.metadata
        ),
    }
    await asyncio.sleep(0.2)
    tasks, waiters = len(asyncio.all_tasks()), _shutdown_waiters(plane)
    rng = random.Random(18)
    for _ in range(40):
        call = opens[stream]()
        # Open for several of the stream's 10 ms waits (some streams send no headers
        # before their first message, so time is what says they run).
        await asyncio.sleep(rng.uniform(0.02, 0.06))
        assert not call.done()
        call.cancel()
    await eventually(lambda: len(asyncio.all_tasks()), lambda n: n <= tasks)
    await eventually(lambda: _shutdown_waiters(plane), lambda n: n <= waiters)
