"""Settings of the registry sync."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.core.settings import ConfigError, Seconds, setting
from ppos.controlplane.core.validation import REGION, ascii_digits

MIB = 1024 * 1024


def _host_port_problem(address: str) -> str | None:
    host, sep, port = address.rpartition(":")
    number = ascii_digits(port)
    if not sep or not host or number is None or not 0 < number <= 65535:
        return f"{address!r} is not HOST:PORT"
    return None


@dataclasses.dataclass(frozen=True)
class RegistrySyncSettings:
    """Registry sync: which regional registries to pull from, how fast and how often."""

    regions: dict[str, str] = setting(
        "PPOS_SYNC_REGIONS",
        "regional registries to sync, REGION=HOST:PORT comma-separated",
        default_factory=dict,
        flag="--sync-regions",
    )
    interval: Seconds = setting(
        "PPOS_SYNC_INTERVAL",
        "how often the scheduler sweeps each region (0: only on demand, StartSweep)",
        default=Seconds(30),
        flag="--sync-interval",
    )
    scheduler: bool = setting(
        "PPOS_SYNC_SCHEDULER",
        "whether this replica may run sweeps (one leader at a time runs them)",
        default=True,
        flag="--sync-scheduler",
    )
    page_records: int = setting(
        "PPOS_SYNC_PAGE_RECORDS",
        "records asked for per page (the registry may cap it)",
        default=500,
        flag="--sync-page-records",
    )
    page_bytes: int = setting(
        "PPOS_SYNC_PAGE_BYTES",
        "soft limit on a page's payload bytes (a page always holds at least one record)",
        default=4 * MIB,
        flag="--sync-page-bytes",
    )
    max_payload_bytes: int = setting(
        "PPOS_SYNC_MAX_PAYLOAD_BYTES",
        "largest canonical payload accepted; larger records are quarantined",
        default=16 * MIB,
        flag="--sync-max-payload-bytes",
    )
    records_per_second: float = setting(
        "PPOS_SYNC_RECORDS_PER_SECOND",
        "records per second over all regions (0: unmetered)",
        default=0.0,
        flag="--sync-records-per-second",
    )
    bytes_per_second: float = setting(
        "PPOS_SYNC_BYTES_PER_SECOND",
        "received bytes per second over all regions (0: unmetered)",
        default=0.0,
        flag="--sync-bytes-per-second",
    )
    region_records_per_second: float = setting(
        "PPOS_SYNC_REGION_RECORDS_PER_SECOND",
        "records per second per region (0: unmetered)",
        default=0.0,
        flag="--sync-region-records-per-second",
    )
    region_bytes_per_second: float = setting(
        "PPOS_SYNC_REGION_BYTES_PER_SECOND",
        "received bytes per second per region (0: unmetered)",
        default=0.0,
        flag="--sync-region-bytes-per-second",
    )
    burst: Seconds = setting(
        "PPOS_SYNC_BURST",
        "token bucket depth, in seconds of the configured rate",
        default=Seconds(1),
        flag="--sync-burst",
    )
    concurrency: int = setting(
        "PPOS_SYNC_CONCURRENCY",
        "regions swept at the same time",
        default=4,
        flag="--sync-concurrency",
    )
    call_timeout: Seconds = setting(
        "PPOS_SYNC_CALL_TIMEOUT",
        "deadline of each call to a registry",
        default=Seconds(30),
        flag="--sync-call-timeout",
    )
    retry_attempts: int = setting(
        "PPOS_SYNC_RETRY_ATTEMPTS",
        "attempts per registry call on UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED",
        default=8,
        flag="--sync-retry-attempts",
    )
    retry_base: Seconds = setting(
        "PPOS_SYNC_RETRY_BASE",
        "first backoff (doubles per attempt, full jitter)",
        default=Seconds(0.2),
        flag="--sync-retry-base",
    )
    retry_max: Seconds = setting(
        "PPOS_SYNC_RETRY_MAX",
        "longest backoff between two attempts",
        default=Seconds(10),
        flag="--sync-retry-max",
    )
    poll_interval: Seconds = setting(
        "PPOS_SYNC_POLL_INTERVAL",
        "how often replicas look for requested sweeps, cancels and status changes in the database",
        default=Seconds(1),
        flag="--sync-poll-interval",
    )
    leader_retry: Seconds = setting(
        "PPOS_SYNC_LEADER_RETRY",
        "how often a replica that does not lead tries to take the lead (and the leader checks it)",
        default=Seconds(1),
        flag="--sync-leader-retry",
    )
    sweep_retention: Seconds = setting(
        "PPOS_SYNC_SWEEP_RETENTION",
        "how long finished sweeps are kept",
        default=Seconds(7 * 86400),
        flag="--sync-sweep-retention",
    )
    verify_interval: Seconds = setting(
        "PPOS_SYNC_VERIFY_INTERVAL",
        "how often each replica verifies the mirror against its chains (0: only on demand)",
        default=Seconds(3600),
        flag="--sync-verify-interval",
    )

    def validate(self) -> None:
        for region, address in self.regions.items():
            if not REGION.fullmatch(region):
                raise ConfigError(
                    f"PPOS_SYNC_REGIONS: {region!r} is not a region name like eu-west-1"
                )
            problem = _host_port_problem(address)
            if problem:
                raise ConfigError(f"PPOS_SYNC_REGIONS: {region}: {problem}")
        if self.interval < 0:
            raise ConfigError("--sync-interval: must not be negative")
        if not 1 <= self.page_records <= 10_000:
            raise ConfigError("--sync-page-records: must be between 1 and 10000")
        if not 1024 <= self.page_bytes <= 64 * MIB:
            raise ConfigError("--sync-page-bytes: must be between 1 KiB and 64 MiB")
        if not 1 <= self.max_payload_bytes <= 48 * MIB:
            raise ConfigError("--sync-max-payload-bytes: must be between 1 byte and 48 MiB")
        for name in (
            "records_per_second",
            "bytes_per_second",
            "region_records_per_second",
            "region_bytes_per_second",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"--sync-{name.replace('_', '-')}: must not be negative")
        if self.burst <= 0:
            raise ConfigError("--sync-burst: must be positive")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError("--sync-concurrency: must be between 1 and 64")
        if self.call_timeout <= 0:
            raise ConfigError("--sync-call-timeout: must be positive")
        if not 1 <= self.retry_attempts <= 100:
            raise ConfigError("--sync-retry-attempts: must be between 1 and 100")
        if not 0 < self.retry_base <= self.retry_max:
            raise ConfigError("--sync-retry-base: must be positive and at most --sync-retry-max")
        if self.poll_interval <= 0 or self.leader_retry <= 0:
            raise ConfigError("--sync-poll-interval and --sync-leader-retry: must be positive")
        if self.verify_interval < 0:
            raise ConfigError("--sync-verify-interval: must not be negative")
        if self.sweep_retention < 60:
            raise ConfigError("--sync-sweep-retention: must be at least 1m")
