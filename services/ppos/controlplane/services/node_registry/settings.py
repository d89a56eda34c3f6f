"""Settings of the node registry."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.runtime.settings import ConfigError, Seconds, setting


@dataclasses.dataclass(frozen=True)
class NodeRegistrySettings:
    """Node registry: heartbeats, readiness and enrollment."""

    heartbeat_interval: Seconds = setting(
        "PPOS_HEARTBEAT_INTERVAL", "how often nodes are told to heartbeat", default=Seconds(10)
    )
    heartbeat_ttl: Seconds = setting(
        "PPOS_HEARTBEAT_TTL", "heartbeat age after which READY turns NOT_READY", default=Seconds(30)
    )
    lost_grace: Seconds = setting(
        "PPOS_LOST_GRACE", "further time after the TTL before a node is LOST", default=Seconds(120)
    )
    enrollment_ttl_max: Seconds = setting(
        "PPOS_ENROLLMENT_TTL_MAX",
        "longest validity of an enrollment token",
        default=Seconds(7 * 86400),
    )

    def validate(self) -> None:
        if not 0 < self.heartbeat_interval < self.heartbeat_ttl:
            raise ConfigError("--heartbeat-interval must be positive and below --heartbeat-ttl")
        if self.lost_grace <= 0:
            raise ConfigError("--lost-grace must be positive")
