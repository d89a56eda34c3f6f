"""Settings of the node registry."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.core.settings import ConfigError, Seconds, setting


@dataclasses.dataclass(frozen=True)
class NodeRegistrySettings:
    """Node registry: heartbeats, readiness sweeps, node commands and WatchNodes."""

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
    sweep_interval: Seconds = setting(
        "PPOS_NODE_SWEEP_INTERVAL",
        "how often the scheduled health sweep runs (0: only on demand, RunHealthSweep)",
        default=Seconds(10),
    )
    sweep_start_delay: Seconds = setting(
        "PPOS_NODE_SWEEP_START_DELAY",
        "wait before the first scheduled sweep after start-up, so nodes can heartbeat after "
        "a control-plane outage before they are judged (keep it at least the heartbeat TTL)",
        default=Seconds(30),
    )
    event_retention: Seconds = setting(
        "PPOS_NODE_EVENT_RETENTION",
        "how long node change events stay in the change log (resume and history)",
        default=Seconds(3600),
    )
    watch_window: int = setting(
        "PPOS_WATCH_WINDOW",
        "node changes each process keeps in memory for WatchNodes resumes",
        default=16384,
    )
    watch_replay_max: int = setting(
        "PPOS_WATCH_REPLAY_MAX",
        "changes a WatchNodes resume older than the memory window may read from the change log "
        "(a larger gap answers RESYNC_REQUIRED)",
        default=100000,
    )
    watch_queue: int = setting(
        "PPOS_WATCH_QUEUE",
        "changes a WatchNodes subscriber may fall behind before it is cut off",
        default=4096,
    )
    watch_flush_interval: Seconds = setting(
        "PPOS_WATCH_FLUSH_INTERVAL",
        "changes arriving within this interval go to each subscriber in one message",
        default=Seconds(0.05),
    )
    watch_send_rate: int = setting(
        "PPOS_WATCH_SEND_RATE",
        "WatchNodes messages per second one process aims to stay under: with many "
        "subscribers the flush interval grows so each gets larger, rarer messages",
        default=10000,
    )
    watch_flush_bytes: int = setting(
        "PPOS_WATCH_FLUSH_BYTES",
        "changes pending beyond this many bytes are published without waiting for the "
        "paced flush interval: coalescing saves per-message costs, not per-byte ones, "
        "and a message beyond the peer's HTTP/2 window waits on its WINDOW_UPDATEs",
        default=16384,
    )
    watch_poll_interval: Seconds = setting(
        "PPOS_WATCH_POLL_INTERVAL",
        "how often the change log is read without a wake-up (other processes on SQLite; "
        "a safety net behind LISTEN/NOTIFY on PostgreSQL)",
        default=Seconds(1),
    )
    watch_stall_timeout: Seconds = setting(
        "PPOS_WATCH_STALL_TIMEOUT",
        "a subscriber whose pending message has not been taken for this long is cut off",
        default=Seconds(30),
    )
    watch_max_subscribers: int = setting(
        "PPOS_WATCH_MAX_SUBSCRIBERS",
        "WatchNodes streams one process serves at most (more are refused)",
        default=10000,
    )

    def validate(self) -> None:
        if not 0 < self.heartbeat_interval < self.heartbeat_ttl:
            raise ConfigError("--heartbeat-interval must be positive and below --heartbeat-ttl")
        if self.lost_grace <= 0:
            raise ConfigError("--lost-grace must be positive")
        if self.sweep_interval < 0 or self.sweep_start_delay < 0:
            raise ConfigError("--sweep-interval and --sweep-start-delay must not be negative")
        if self.event_retention < 60:
            raise ConfigError("--event-retention must be at least 60s")
        if self.watch_replay_max < 0:
            raise ConfigError("--watch-replay-max must not be negative")
        if not 1 <= self.watch_queue <= self.watch_window:
            raise ConfigError("--watch-queue must be between 1 and --watch-window")
        if not 0 <= self.watch_flush_interval <= 1:
            raise ConfigError("--watch-flush-interval must be between 0 and 1s")
        if self.watch_flush_bytes < 1024:
            raise ConfigError("--watch-flush-bytes must be at least 1024")
        if self.watch_send_rate < 100:
            raise ConfigError("--watch-send-rate must be at least 100")
        if not 0 < self.watch_poll_interval <= 60:
            raise ConfigError("--watch-poll-interval must be between 0 and 60s")
        if self.watch_stall_timeout <= 0:
            raise ConfigError("--watch-stall-timeout must be positive")
        if self.watch_max_subscribers < 1:
            raise ConfigError("--watch-max-subscribers must be at least 1")
