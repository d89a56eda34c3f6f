"""Live views of server streams: a table redrawn in place on a terminal, one line
per event for pipes, one JSON object per line with `-o json`.

Watches survive a restarting server: on UNAVAILABLE they reconnect with
backoff and resume from the last resource version seen; when the server says
the version is too old (RESYNC_REQUIRED) they start again from a snapshot.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.app import Context
from ppos.controlplane.cli.output import Column, enum_name
from ppos.controlplane.client import Stream, UnavailableError
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb

MAX_RECONNECTS = 6
EVENT_PREFIX = "WATCH_EVENT_TYPE_"


class Deadline:
    """Stops a watch after `seconds` by cancelling its current stream."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds
        self._timer: threading.Timer | None = None

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    @contextmanager
    def guard(self, stream: Stream[Any]) -> Iterator[None]:
        if self.at is not None:
            self._timer = threading.Timer(max(self.at - time.monotonic(), 0), stream.cancel)
            self._timer.daemon = True
            self._timer.start()
        try:
            yield
        finally:
            if self._timer is not None:
                self._timer.cancel()


def reconnect_delay(attempt: int) -> float:
    return random.uniform(0, min(5.0, 0.25 * 2**attempt))  # noqa: S311 - jitter


def _node_table(columns: Sequence[Column], nodes: dict[str, node_pb2.Node]) -> Table:
    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 3, 0, 0)
    )
    for index, column in enumerate(columns):
        if not column.wide:  # the id column is never squeezed; the others fold
            width = (
                max((len(column.cell(n)) for n in nodes.values()), default=0) if not index else 0
            )
            table.add_column(column.header, no_wrap=True, overflow="fold", min_width=width or None)
    for node_id in sorted(nodes):
        table.add_row(*[Text(c.cell(nodes[node_id])) for c in columns if not c.wide])
    return table


def watch_nodes(
    ctx: Context,
    node_filter: node_pb2.NodeFilter,
    *,
    resume_from: int,
    max_events: int,
    duration_seconds: float | None,
    columns: Sequence[Column],
) -> int:
    out = ctx.out
    deadline = Deadline(duration_seconds)
    nodes: dict[str, node_pb2.Node] = {}
    version = resume_from
    counted = 0
    failures = 0
    status = Text("connecting...", style="dim")
    live = Live(console=out.console, auto_refresh=False) if out.interactive else None
    header_printed = False

    def render() -> None:
        if live is not None:
            live.update(Group(_node_table(columns, nodes), status), refresh=True)

    def line(event: pb.WatchEvent) -> None:
        nonlocal header_printed
        kind = enum_name(pb.WatchEventType, event.type, EVENT_PREFIX)
        if out.is_json:
            out.json_line(event)
            return
        if not event.HasField("node"):
            if event.type == pb.WATCH_EVENT_TYPE_RESYNC_REQUIRED:
                out.note(f"resync required at version {event.resource_version}")
            return
        shown = [c for c in columns if not c.wide]
        if not header_printed:
            out.console.print(
                "EVENT          RV      " + "   ".join(c.header for c in shown),
                markup=False,
                highlight=False,
            )
            header_printed = True
        cells = "   ".join(c.cell(event.node) for c in shown)
        out.console.print(
            f"{kind:<14} {event.resource_version:<7} {cells}", markup=False, highlight=False
        )

    if live is not None:
        live.start()
    try:
        while not deadline.passed:
            stream = ctx.cp.nodes.watch_nodes(node_filter, resume_from_version=version)
            resync = False
            try:
                with deadline.guard(stream):
                    for message in stream:
                        failures = 0
                        for event in message.events:
                            if event.type == pb.WATCH_EVENT_TYPE_RESYNC_REQUIRED:
                                resync = True
                            elif event.type == pb.WATCH_EVENT_TYPE_DELETED:
                                nodes.pop(event.node.node_id, None)
                            elif event.HasField("node"):
                                nodes[event.node.node_id] = event.node
                            if event.resource_version:
                                version = event.resource_version
                            if live is None:
                                line(event)
                            if event.type != pb.WATCH_EVENT_TYPE_BOOKMARK:
                                counted += 1
                            if max_events and counted >= max_events:
                                break
                        status.plain = f"resource version {version} · {len(nodes)} nodes"
                        render()
                        if max_events and counted >= max_events:
                            stream.cancel()
                            return exitcodes.OK
                        if resync:
                            break
            except UnavailableError as exc:
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise
                status.plain = f"reconnecting ({exc.message})"
                render()
                time.sleep(reconnect_delay(failures))
            if resync:
                version = 0
                nodes.clear()
                out.note("watch fell too far behind: starting again from a snapshot")
        return exitcodes.OK
    finally:
        if live is not None:
            live.stop()


def follow(
    ctx: Context,
    open_stream: Callable[[], Stream[Any]],
    *,
    show: Callable[[Any], None],
    max_messages: int,
    duration_seconds: float | None,
    on_message: Callable[[Any], None] | None = None,
) -> int:
    """Print every message of a stream until it ends, `max_messages` or the duration."""
    deadline = Deadline(duration_seconds)
    seen = 0
    failures = 0
    while not deadline.passed:
        stream = open_stream()
        try:
            with deadline.guard(stream):
                for message in stream:
                    failures = 0
                    if on_message is not None:
                        on_message(message)
                    if ctx.out.is_json:
                        ctx.out.json_line(message)
                    else:
                        show(message)
                    seen += 1
                    if max_messages and seen >= max_messages:
                        stream.cancel()
                        return exitcodes.OK
        except UnavailableError:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise
            time.sleep(reconnect_delay(failures))
            continue
        break  # the stream ended: finished, or our deadline cancelled it
    return exitcodes.OK
