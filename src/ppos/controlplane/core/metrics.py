"""Prometheus metrics of the control plane, defined in one place.

Services import the metric they update; the HTTP exposition and the RPC
interceptor are wired by the composition root. Label values are bounded
(method names, regions, reasons): never ids or free text.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_REQUESTS = Counter(
    "ppos_rpc_requests_total", "RPCs handled, by method and status code", ["method", "code"]
)
RPC_DURATION = Histogram(
    "ppos_rpc_duration_seconds",
    "Time to handle an RPC (unary: to the response; streams: to the end)",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
AUTH_FAILURES = Counter(
    "ppos_auth_failures_total", "Calls refused at the edge, by reason", ["reason"]
)

SYNC_RECORDS = Counter("ppos_sync_records_total", "Job records stored by the sync", ["region"])
SYNC_BYTES = Counter("ppos_sync_bytes_total", "canonicalPayload bytes stored", ["region"])
SYNC_RUNTIME_FAILURES = Counter(
    "ppos_sync_runtime_environment_failures_total",
    "Job records stored by the sync in governance state FAILED_RUNTIME_ENVIRONMENT",
    ["region"],
)
SYNC_QUARANTINED = Counter(
    "ppos_sync_quarantined_total", "Records quarantined, by reason", ["region", "reason"]
)
SYNC_LAG_CHANGES = Gauge(
    "ppos_sync_lag_changes", "Changes the registry reports after our cursor", ["region"]
)
SYNC_LAG_SECONDS = Gauge(
    "ppos_sync_lag_seconds",
    "Age of the oldest change not yet synced (0 when caught up)",
    ["region"],
)
SYNC_ERRORS = Counter(
    "ppos_sync_errors_total", "Failed registry calls, by kind", ["region", "kind"]
)
SYNC_SWEEP_DURATION = Histogram(
    "ppos_sync_sweep_duration_seconds", "Duration of a region's sweep", ["region"]
)
SYNC_DUPLICATES = Counter(
    "ppos_sync_duplicates_total",
    "Records received again with the digest already stored",
    ["region"],
)
SYNC_VERIFY_LAST_SUCCESS = Gauge(
    "ppos_sync_verify_last_success_timestamp_seconds",
    "When the region's mirror last verified intact against its chains",
    ["region"],
)
SYNC_VERIFY_DIVERGENCES = Counter(
    "ppos_sync_verify_divergences_total",
    "Verifications of the mirror that found a divergence, by kind",
    ["region", "kind"],
)
SYNC_LEADER = Gauge("ppos_sync_leader", "1 while this replica leads the registry sync")
FENCED_WRITES = Counter(
    "ppos_fenced_writes_total",
    "Writes refused because this replica's lead or lease had passed to another "
    "(a frozen or cut-off replica waking up), by loop; each changed nothing",
    ["loop"],
)

WATCH_SUBSCRIBERS = Gauge("ppos_watch_subscribers", "Open WatchNodes streams")
WATCH_DROPS = Counter(
    "ppos_watch_dropped_subscribers_total", "Watchers cut off, by reason", ["reason"]
)
WATCH_EVENTS = Counter("ppos_watch_events_total", "Node change events published")
WATCH_FANOUT = Histogram(
    "ppos_watch_fanout_seconds",
    "Time from publishing node changes until all but 2 % of WatchNodes subscribers "
    "have handed their message to gRPC (or had nothing to send)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
NODE_SWEEP_DURATION = Histogram(
    "ppos_node_sweep_duration_seconds", "Duration of a node health sweep"
)
NODE_SWEEP_CHANGES = Counter(
    "ppos_node_sweep_changes_total", "Nodes changed by health sweeps", ["transition"]
)

OUTBOX_DEPTH = Gauge("ppos_outbox_depth", "Outbox commands by state", ["state"])
OUTBOX_DELIVERIES = Counter(
    "ppos_outbox_deliveries_total", "Outbox delivery attempts, by outcome", ["target", "outcome"]
)
OUTBOX_FENCED = Counter(
    "ppos_outbox_fenced_writes_total",
    "Dispatcher writes for commands whose lease had passed to another replica, which "
    "changed nothing, by write (renew, outcome, release)",
    ["write"],
)
DATABASE_FAILURES = Counter(
    "ppos_database_failures_total",
    "Database failures told apart by the storage layer, by kind (conflict, unavailable, "
    "input) and outcome (retried, aborted, answered)",
    ["kind", "outcome"],
)
ADMIN_JOBS = Counter(
    "ppos_admin_jobs_total", "Admin jobs finished, by kind and state", ["kind", "state"]
)
