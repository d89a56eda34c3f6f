"""WatchNodes: a snapshot of matching nodes, then every change, with versions."""

from __future__ import annotations

import functools

from ppos.controlplane.core.timeutil import duration_seconds
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import current_request_id
from ppos.controlplane.services.node_registry.filters import parse_filter
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.rpc_base import Context
from ppos.controlplane.services.node_registry.watch_stream import serve

DEFAULT_BOOKMARK_INTERVAL = 10.0
MIN_BOOKMARK_INTERVAL = 1.0
MAX_BOOKMARK_INTERVAL = 3600.0


class WatchRpcs:
    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub

    async def WatchNodes(  # writes encoded WatchNodesResponse bytes (see watch_encoding)
        self, request: pb.WatchNodesRequest, context: Context
    ) -> None:
        violations = Violations()
        query = parse_filter(request.filter, violations, prefix="filter")
        if request.resume_from_version < 0:
            violations.add("resume_from_version", "must not be negative")
        interval = (
            duration_seconds(request.bookmark_interval)
            if request.HasField("bookmark_interval")
            else DEFAULT_BOOKMARK_INTERVAL
        )
        if not MIN_BOOKMARK_INTERVAL <= interval <= MAX_BOOKMARK_INTERVAL:
            violations.add(
                "bookmark_interval",
                f"must be between {MIN_BOOKMARK_INTERVAL:g}s and {MAX_BOOKMARK_INTERVAL:g}s",
            )
        violations.raise_if_any()
        subscribe = functools.partial(
            self._hub.subscribe,
            query,
            request.resume_from_version,
            interval,
            context,
            current_request_id.get(),
        )
        await serve(self._hub, subscribe, context)
