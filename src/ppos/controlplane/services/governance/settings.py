"""Settings of the governance service."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.core.settings import ConfigError, Seconds, setting
from ppos.controlplane.core.validation import REGION, ascii_digits

BACKGROUND_TASKS = ("dispatcher", "reconciler", "admin-jobs")


@dataclasses.dataclass(frozen=True)
class GovernanceSettings:
    """Governance: gateways, outbox delivery, the reconciler and admin jobs."""

    gateways: dict[str, str] = setting(
        "PPOS_GATEWAYS",
        "regional preflight gateways, REGION=HOST:PORT comma-separated",
        default_factory=dict,
    )
    governance_background: list[str] = setting(
        "PPOS_GOVERNANCE_BACKGROUND",
        "background work this process runs: dispatcher, reconciler, admin-jobs "
        "(comma-separated; empty runs none)",
        default_factory=lambda: list(BACKGROUND_TASKS),
    )
    outbox_poll_interval: Seconds = setting(
        "PPOS_OUTBOX_POLL_INTERVAL",
        "how often the dispatcher looks for due commands when idle",
        default=Seconds(0.5),
    )
    outbox_batch_size: int = setting(
        "PPOS_OUTBOX_BATCH_SIZE", "commands a dispatcher leases at a time", default=32
    )
    outbox_concurrency: int = setting(
        "PPOS_OUTBOX_CONCURRENCY", "deliveries in flight per dispatcher", default=256
    )
    outbox_target_concurrency: int = setting(
        "PPOS_OUTBOX_TARGET_CONCURRENCY",
        "deliveries in flight per dispatcher to one receiver (a region's gateway, the "
        "node registry), so a slow receiver does not take every slot",
        default=64,
    )
    outbox_lease: Seconds = setting(
        "PPOS_OUTBOX_LEASE",
        "how long a command stays leased to a replica after the replica last renewed it "
        "(every third of this while delivering); a replica killed or frozen loses its "
        "commands this long after, and another delivers them with the same idempotency key",
        default=Seconds(3),
    )
    outbox_call_timeout: Seconds = setting(
        "PPOS_OUTBOX_CALL_TIMEOUT", "deadline of one delivery call", default=Seconds(10)
    )
    outbox_backoff_base: Seconds = setting(
        "PPOS_OUTBOX_BACKOFF_BASE",
        "first retry delay after a transient delivery error (doubles, jittered)",
        default=Seconds(0.5),
    )
    outbox_backoff_max: Seconds = setting(
        "PPOS_OUTBOX_BACKOFF_MAX", "longest retry delay", default=Seconds(60)
    )
    outbox_max_attempts: int = setting(
        "PPOS_OUTBOX_MAX_ATTEMPTS",
        "attempts after which a command FAILS even on transient errors "
        "(0: hold and retry while the receiver is unreachable)",
        default=0,
    )
    reconciler_interval: Seconds = setting(
        "PPOS_RECONCILER_INTERVAL",
        "how often the reconciler looks for newly synced jobs",
        default=Seconds(2),
    )
    reconciler_page_size: int = setting(
        "PPOS_RECONCILER_PAGE_SIZE", "synced jobs read per ListSyncedJobs call", default=100
    )
    admin_job_poll_interval: Seconds = setting(
        "PPOS_ADMIN_JOB_POLL_INTERVAL",
        "how often idle replicas look for admin jobs to run or resume",
        default=Seconds(0.5),
    )
    admin_job_lease: Seconds = setting(
        "PPOS_ADMIN_JOB_LEASE",
        "how long a replica's hold on a running admin job lasts (renewed every third "
        "of it); after it runs out (the replica died or froze) another replica resumes "
        "the job from its checkpoint",
        default=Seconds(3),
    )
    governance_watch_poll: Seconds = setting(
        "PPOS_GOVERNANCE_WATCH_POLL",
        "how often WatchAdminJob and WatchAuditEntries look for changes",
        default=Seconds(0.25),
    )
    audit_gap_grace: Seconds = setting(
        "PPOS_AUDIT_GAP_GRACE",
        "how long WatchAuditEntries waits for an audit id gap to fill (a transaction "
        "still committing) before moving past it",
        default=Seconds(2),
    )

    def validate(self) -> None:
        for region, address in self.gateways.items():
            if not REGION.fullmatch(region):
                raise ConfigError(f"PPOS_GATEWAYS: {region!r} is not a region name")
            host, sep, port = address.rpartition(":")
            if not sep or not host or ascii_digits(port) is None:
                raise ConfigError(f"PPOS_GATEWAYS: {region}={address!r} is not HOST:PORT")
        unknown = [name for name in self.governance_background if name not in BACKGROUND_TASKS]
        if unknown:
            raise ConfigError(
                f"PPOS_GOVERNANCE_BACKGROUND: unknown {unknown}; "
                f"choose from {', '.join(BACKGROUND_TASKS)}"
            )
        if not 1 <= self.outbox_batch_size <= 1000:
            raise ConfigError("PPOS_OUTBOX_BATCH_SIZE: must be between 1 and 1000")
        if not 1 <= self.outbox_concurrency <= 1024:
            raise ConfigError("PPOS_OUTBOX_CONCURRENCY: must be between 1 and 1024")
        if not 1 <= self.outbox_target_concurrency <= self.outbox_concurrency:
            raise ConfigError(
                "PPOS_OUTBOX_TARGET_CONCURRENCY: must be between 1 and PPOS_OUTBOX_CONCURRENCY"
            )
        if self.outbox_call_timeout <= 0:
            raise ConfigError("PPOS_OUTBOX_CALL_TIMEOUT: must be positive")
        if self.outbox_lease < 1:
            raise ConfigError("PPOS_OUTBOX_LEASE: must be at least 1s (renewed every third of it)")
        if not 0 < self.outbox_backoff_base <= self.outbox_backoff_max:
            raise ConfigError("PPOS_OUTBOX_BACKOFF_BASE must be positive and at most the max")
        if self.outbox_max_attempts < 0:
            raise ConfigError("PPOS_OUTBOX_MAX_ATTEMPTS: must not be negative")
        for name in (
            "outbox_poll_interval",
            "reconciler_interval",
            "admin_job_poll_interval",
            "governance_watch_poll",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be positive")
        if not 1 <= self.reconciler_page_size <= 1000:
            raise ConfigError("PPOS_RECONCILER_PAGE_SIZE: must be between 1 and 1000")
        if self.admin_job_lease < 2 * self.admin_job_poll_interval:
            raise ConfigError("PPOS_ADMIN_JOB_LEASE must be at least twice the poll interval")
        if self.audit_gap_grace < 0:
            raise ConfigError("PPOS_AUDIT_GAP_GRACE: must not be negative")
