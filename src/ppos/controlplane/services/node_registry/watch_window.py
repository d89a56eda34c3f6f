"""The watch hub's memory: every node's current state and a bounded window of recent
changes, shared by all subscribers (each is only a cursor into it), and the
messages built from them.

Subscribers caught up with the same filter share one message per publish;
a snapshot's messages are shared while nothing changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ppos.controlplane.services.node_registry import watch_encoding
from ppos.controlplane.services.node_registry.changelog import LoggedEvent
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.watch_changes import CachedNode, NodeChange
from ppos.controlplane.services.node_registry.watch_subscribers import Subscriber

MAX_EVENTS_PER_MESSAGE = 1000
MAX_BYTES_PER_MESSAGE = 1 << 20


class ChangeWindow:
    def __init__(self, size: int) -> None:
        self._size = size  # changes kept (trimmed in chunks past it)
        self._cache: dict[str, CachedNode] = {}
        self._order: list[str] = []
        self._changes: list[NodeChange] = []
        self.versions: list[int] = []
        self.base_seq = 0  # sequence number of the first change in the window
        self.floor = 0  # every change after this version is in the window
        self.head = 0
        # Messages built for subscribers at the same cursor with the same filter,
        # for the current head: (cursor, filter key) -> (bytes, last version).
        self._shared: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._snapshot_memo: tuple[int, int, dict[str, list[bytes]]] = (-1, -1, {})

    @property
    def head_seq(self) -> int:
        return self.base_seq + len(self._changes)

    def reset(self, head: int, nodes: list[tuple[str, CachedNode]]) -> None:
        """Start over from a fresh load of every node at version `head`."""
        self._cache = dict(nodes)
        self._order = [node_id for node_id, _ in nodes]
        self.base_seq += len(self._changes)
        self._changes, self.versions = [], []
        self.head = self.floor = head
        self._shared = {}

    def apply(self, rows: Sequence[LoggedEvent]) -> None:
        for version, node_id, view, node in rows:
            if view is None:
                continue  # a later event carries this node's state
            previous = self._cache.get(node_id)
            self._cache[node_id] = CachedNode(view, node, version)
            if previous is None:
                bisect.insort(self._order, node_id)
            prev_view = previous.view if previous is not None else None
            self._changes.append(NodeChange(version, node_id, prev_view, view, node))
            self.versions.append(version)
        self.head = max(self.head, rows[-1][0])

    def published(self) -> None:
        """A publish: shared messages were for the previous head; trim the window."""
        self._shared = {}
        excess = len(self._changes) - self._size
        if excess <= max(64, self._size // 8):
            return  # trim in chunks, not on every change
        self.floor = self.versions[excess - 1]
        del self._changes[:excess]
        del self.versions[:excess]
        self.base_seq += excess

    def place_for_snapshot(self, sub: Subscriber, query: NodeQuery) -> None:
        sub.snapshot = self._snapshot(query, sub.query_key)
        sub.cursor = self.head_seq
        sub.sent_version = self.head

    def place(self, sub: Subscriber, resume_from: int) -> bool:
        """Put `sub` just after version `resume_from`; False when the window no longer
        holds the changes after it (the subscriber must resync)."""
        if resume_from < self.floor:
            return False
        if resume_from >= self.head:
            sub.cursor = self.head_seq
            sub.skip_through = resume_from
        else:
            sub.cursor = self.base_seq + bisect.bisect_right(self.versions, resume_from)
        sub.sent_version = resume_from
        return True

    def _snapshot(self, query: NodeQuery, key: str) -> list[bytes]:
        """Messages of the snapshot at the head version (shared while nothing changes)."""
        version, seq, memo = self._snapshot_memo
        if version != self.head or seq != self.head_seq:
            memo = {}
            self._snapshot_memo = (self.head, self.head_seq, memo)
        chunks = memo.get(key)
        if chunks is None:
            head = self.head
            events = [
                watch_encoding.framed_event(watch_encoding.SNAPSHOT, head, cached.node)
                for cached in (self._cache[node_id] for node_id in self._order)
                if query.everything or query.matches(cached.view)
            ]
            events.append(watch_encoding.framed_event(watch_encoding.SNAPSHOT_END, head))
            chunks = memo[key] = chunk_messages(events)
        return chunks

    def collect(self, sub: Subscriber) -> bytes | None:
        """The next message for `sub` (changes after its cursor), or None when caught up.

        Subscribers at the same cursor with the same filter share one message
        (built once per head): caught-up ones after each publish, and lagging ones
        that lag alike. Others get theirs built in chunks.
        """
        head_seq = self.head_seq
        if sub.cursor >= head_seq:
            return None
        pending = head_seq - sub.cursor
        if (
            pending <= MAX_EVENTS_PER_MESSAGE
            and sub.cursor >= self.base_seq
            and sub.skip_through < self.versions[sub.cursor - self.base_seq]
        ):
            key = (sub.cursor, sub.query_key)
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared[key] = self._build(sub, sub.cursor)
            blob, last = shared
            if len(blob) <= MAX_BYTES_PER_MESSAGE:
                sub.cursor = head_seq
                if blob:
                    sub.sent_version = last
                return blob or None
        return self._collect_chunk(sub)

    def _collect_chunk(self, sub: Subscriber) -> bytes | None:
        """The next message of `sub` built for it alone, bounded in events and bytes."""
        parts: list[bytes] = []
        size = 0
        index = sub.cursor - self.base_seq
        window = self._changes
        while index < len(window) and len(parts) < MAX_EVENTS_PER_MESSAGE:
            change = window[index]
            index += 1
            if change.version <= sub.skip_through:
                continue
            kind = change.event_type(sub.query)
            if kind is None:
                continue
            framed = change.framed(kind)
            parts.append(framed)
            size += len(framed)
            sub.sent_version = change.version
            if size >= MAX_BYTES_PER_MESSAGE:
                break
        sub.cursor = self.base_seq + index
        return b"".join(parts) if parts else None

    def _build(self, sub: Subscriber, cursor: int) -> tuple[bytes, int]:
        parts = []
        last = 0
        for change in self._changes[cursor - self.base_seq :]:
            kind = change.event_type(sub.query)
            if kind is not None:
                parts.append(change.framed(kind))
                last = change.version
        return b"".join(parts), last

    def bookmark(self, sub: Subscriber) -> bytes:
        sub.sent_version = max(sub.sent_version, self.head)
        return watch_encoding.framed_event(watch_encoding.BOOKMARK, sub.sent_version)

    def resync_event(self) -> bytes:
        return watch_encoding.framed_event(watch_encoding.RESYNC_REQUIRED, self.head)


def chunk_messages(events: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for event in events:
        if current and (
            len(current) >= MAX_EVENTS_PER_MESSAGE or size + len(event) > MAX_BYTES_PER_MESSAGE
        ):
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(event)
        size += len(event)
    if current:
        chunks.append(b"".join(current))
    return chunks
