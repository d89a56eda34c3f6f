"""RegistrySyncService: sync status, sweeps on demand, and read-back of synced jobs.

No RPC writes a synced job or a quarantined record: those tables change only
through a sweep's page commits. StartSweep and CancelSweep only request work
(audited); whichever replica leads does it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, NotFound
from ppos.controlplane.core.pagination import Ident, Integer, Listing, page_size
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, MAX_REGIONS, Violations
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.registry_sync import (
    convert,
    queries,
    status_reads,
    sweep_records,
    sweep_requests,
    verify_mirror,
)
from ppos.controlplane.services.registry_sync.backoff import Backoff
from ppos.controlplane.services.registry_sync.checkpoints import CHECKPOINT_TYP
from ppos.controlplane.services.registry_sync.client import RegistryClient
from ppos.controlplane.services.registry_sync.deps import RegistrySyncDeps
from ppos.controlplane.services.registry_sync.lag import LagGauges
from ppos.controlplane.services.registry_sync.metering import Meter, Rates
from ppos.controlplane.services.registry_sync.mirror_verifier import MirrorVerifier
from ppos.controlplane.services.registry_sync.region_pull import StatusBus, SweepContext
from ppos.controlplane.services.registry_sync.scheduler import SyncScheduler
from ppos.controlplane.services.registry_sync.source_readback import (
    ReadbackSettings,
    SourceReader,
)
from ppos.controlplane.services.registry_sync.source_verifier import SourceVerifier
from ppos.controlplane.services.registry_sync.verify import enum_text
from ppos.controlplane.storage.leadership import leadership_for
from ppos.preflight.v1 import job_pb2

SERVICE = sweep_requests.SERVICE
_METHODS = "/ppos.controlplane.registrysync.v1.RegistrySyncService/"
# The scheduler's advisory lock key ("ppos" "lead"), older than keys derived from
# names: kept so replicas of two releases contend for one lock.
SYNC_LEADER_KEY = 0x70706F73_6C656164
SWEEPS_PAGE = Listing(_METHODS + "ListSweeps", Ident("sweep_id"))
QUARANTINE_PAGE = Listing(_METHODS + "ListQuarantinedRecords", Integer("quarantine_id"))
Context = grpc.aio.ServicerContext[Any, Any]
SHUTDOWN_MESSAGE = (
    "server shutting down: call WatchSyncStatus again (on this or another replica); "
    "the stream starts with every selected region's current status"
)


class RegistrySyncServicer(pb_grpc.RegistrySyncServiceServicer):
    def __init__(
        self,
        deps: RegistrySyncDeps,
        scheduler: SyncScheduler,
        bus: StatusBus,
        verifier: MirrorVerifier,
        source_verifier: SourceVerifier,
    ) -> None:
        self._deps = deps
        self._verifier = verifier
        self._source_verifier = source_verifier
        self._settings = deps.settings
        self._scheduler = scheduler
        self._bus = bus

    # -- helpers ---------------------------------------------------------------

    @property
    def _regions(self) -> list[str]:
        return sorted(self._settings.regions)

    def _check_regions(
        self, field: str, regions: list[str], violations: Violations | None = None
    ) -> None:
        if violations is None:
            violations = Violations()
        if not violations.at_most(field, regions, MAX_REGIONS, "regions"):
            regions = []
        seen: set[str] = set()
        for index, region in enumerate(regions):
            name = f"{field}[{index}]"
            if not violations.region(name, region):
                continue
            if region in seen:
                violations.add(name, f"{region!r} is listed twice")
            elif region not in self._settings.regions:
                configured = ", ".join(self._regions) or "none"
                violations.add(
                    name, f"{region!r} is not a synced region (configured: {configured})"
                )
            seen.add(region)
        violations.raise_if_any()

    async def _sweep(self, sweep_id: str) -> pb.Sweep:
        row, parts = await self._deps.db.read(lambda s: sweep_records.get_sweep(s, sweep_id))
        return convert.sweep(row, parts)

    # -- status ----------------------------------------------------------------

    async def ListSyncStatuses(
        self, request: pb.ListSyncStatusesRequest, context: Context
    ) -> pb.ListSyncStatusesResponse:
        statuses, leader = await status_reads.statuses_and_leader(self._deps.db, self._regions)
        return pb.ListSyncStatusesResponse(statuses=statuses, leader=leader)

    async def GetSyncStatus(
        self, request: pb.GetSyncStatusRequest, context: Context
    ) -> pb.GetSyncStatusResponse:
        violations = Violations()
        violations.region("region", request.region)
        violations.raise_if_any()
        if request.region not in self._settings.regions:
            raise NotFound("sync region", request.region)
        (status,), leader = await status_reads.statuses_and_leader(self._deps.db, [request.region])
        return pb.GetSyncStatusResponse(status=status, leader=leader)

    async def WatchSyncStatus(
        self, request: pb.WatchSyncStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchSyncStatusResponse]:
        regions = list(request.regions)
        self._check_regions("regions", regions)
        regions = regions or self._regions
        shutdown = self._deps.shutdown
        sent: dict[str, bytes] = {}
        while not shutdown.is_set():
            for status in await status_reads.region_statuses(self._deps.db, regions):
                # Lag (an age) moves with the clock; send when anything else changed.
                stable = pb.RegionSyncStatus()
                stable.CopyFrom(status)
                stable.ClearField("lag")
                key = stable.SerializeToString(deterministic=True)
                if sent.get(status.region) != key:
                    sent[status.region] = key
                    yield pb.WatchSyncStatusResponse(status=status)
            await self._bus_or_shutdown(self._settings.poll_interval)
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)

    async def _bus_or_shutdown(self, seconds: float) -> None:
        if self._deps.shutdown.is_set():
            return
        bus = asyncio.ensure_future(self._bus.wait(seconds))
        stop = asyncio.ensure_future(self._deps.shutdown.wait())
        try:
            await asyncio.wait({bus, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            bus.cancel()
            stop.cancel()

    # -- sweeps ----------------------------------------------------------------

    async def StartSweep(
        self, request: pb.StartSweepRequest, context: Context
    ) -> pb.StartSweepResponse:
        regions = list(request.regions)
        violations = Violations()
        violations.object_id("request_id", request.request_id, required=False)
        self._check_regions("regions", regions, violations)
        if not self._settings.regions:
            raise FailedPrecondition(
                "no regions are configured for sync (PPOS_SYNC_REGIONS)",
                reason="NO_SYNC_REGIONS",
            )
        regions = regions or self._regions
        principal = current_principal.get()
        now = utcnow()
        row, parts = await self._deps.db.write(
            lambda s: sweep_requests.start(
                s, regions, started_by=principal.display, request_id=request.request_id, now=now
            )
        )
        self._scheduler.wake()
        return pb.StartSweepResponse(sweep=convert.sweep(row, parts))

    async def GetSweep(self, request: pb.GetSweepRequest, context: Context) -> pb.GetSweepResponse:
        violations = Violations()
        violations.object_id("sweep_id", request.sweep_id)
        violations.raise_if_any()
        return pb.GetSweepResponse(sweep=await self._sweep(request.sweep_id))

    async def ListSweeps(
        self, request: pb.ListSweepsRequest, context: Context
    ) -> pb.ListSweepsResponse:
        violations = Violations()
        states = []
        bounded = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, state in enumerate(request.states if bounded else ()):
            name = convert.SWEEP_STATE_NAMES.get(state)
            if name is None:
                violations.add(f"states[{index}]", f"{state} is not a sweep state")
            else:
                states.append(name)
        violations.raise_if_any()
        limit = page_size(request.page_size)
        filters = {"states": sorted(states)}
        position = self._deps.page_tokens.read(SWEEPS_PAGE, filters, request.page_token)
        before: str = position[0] if position else ""
        rows, more = await self._deps.db.read(
            lambda s: queries.sweeps_page(s, states=states, before_id=before, limit=limit)
        )
        reply = pb.ListSweepsResponse(sweeps=[convert.sweep(row, parts) for row, parts in rows])
        if more and rows:
            reply.next_page_token = self._deps.page_tokens.issue(
                SWEEPS_PAGE, filters, (rows[-1][0].sweep_id,)
            )
        return reply

    async def CancelSweep(
        self, request: pb.CancelSweepRequest, context: Context
    ) -> pb.CancelSweepResponse:
        violations = Violations()
        violations.object_id("sweep_id", request.sweep_id)
        violations.raise_if_any()
        now = utcnow()
        row, parts = await self._deps.db.write(
            lambda s: sweep_requests.cancel(s, request.sweep_id, now)
        )
        self._scheduler.cancel_local(request.sweep_id)
        return pb.CancelSweepResponse(sweep=convert.sweep(row, parts))

    # -- synced jobs -----------------------------------------------------------

    async def GetSyncedJob(
        self, request: pb.GetSyncedJobRequest, context: Context
    ) -> pb.GetSyncedJobResponse:
        violations = Violations()
        violations.region("region", request.region)
        violations.object_id("job_id", request.job_id)
        if request.revision < 0:
            violations.add("revision", "must not be negative (0 means the newest)")
        violations.raise_if_any()

        def work(session: Session) -> pb.SyncedJob:
            row = queries.synced_job(session, request.region, request.job_id, request.revision)
            return convert.synced_job(row, payload=queries.payload_of(session, row.sync_sequence))

        return pb.GetSyncedJobResponse(job=await self._deps.db.read(work))

    async def VerifyMirror(
        self, request: pb.VerifyMirrorRequest, context: Context
    ) -> pb.VerifyMirrorResponse:
        regions = list(request.regions)
        violations = Violations()
        limit = verify_mirror.divergence_limit(request.max_divergences, violations)
        self._check_regions("regions", regions, violations)
        return await verify_mirror.verify_mirror(
            self._verifier,
            self._source_verifier,
            regions or self._regions,
            payloads=request.check_payloads,
            against_source=request.against_source,
            limit=limit,
        )

    async def ListSyncedJobs(
        self, request: pb.ListSyncedJobsRequest, context: Context
    ) -> pb.ListSyncedJobsResponse:
        violations = Violations()
        violations.region("region", request.region, required=False)
        violations.object_id("job_id", request.job_id, required=False)
        if request.after_sync_sequence < 0:
            violations.add("after_sync_sequence", "must not be negative")
        states = []
        listed = request.governance_states
        bounded = violations.at_most("governance_states", listed, MAX_ENUM_FILTER)
        for index, state in enumerate(listed if bounded else ()):
            if state not in job_pb2.GovernanceState.values():
                violations.add(f"governance_states[{index}]", f"{state} is not a governance state")
            states.append(enum_text(job_pb2.GovernanceState, state))
        violations.raise_if_any()
        limit = page_size(request.page_size)

        def work(session: Session) -> tuple[list[pb.SyncedJob], bool]:
            rows, more = queries.synced_jobs(
                session,
                region=request.region,
                governance_states=states,
                job_id=request.job_id,
                after_sequence=request.after_sync_sequence,
                limit=limit,
                with_payload=not request.omit_payload,
            )
            return [convert.synced_job(row, payload=payload) for row, payload in rows], more

        jobs, more = await self._deps.db.read(work)
        last = jobs[-1].sync_sequence if jobs else request.after_sync_sequence
        return pb.ListSyncedJobsResponse(jobs=jobs, last_sync_sequence=last, has_more=more)

    async def ListQuarantinedRecords(
        self, request: pb.ListQuarantinedRecordsRequest, context: Context
    ) -> pb.ListQuarantinedRecordsResponse:
        violations = Violations()
        violations.region("region", request.region, required=False)
        violations.raise_if_any()
        limit = page_size(request.page_size)
        filters = {"region": request.region}
        position = self._deps.page_tokens.read(QUARANTINE_PAGE, filters, request.page_token)
        after: int = position[0] if position else 0
        rows, more = await self._deps.db.read(
            lambda s: queries.quarantined(s, region=request.region, after_id=after, limit=limit)
        )
        reply = pb.ListQuarantinedRecordsResponse(records=[convert.quarantined(r) for r in rows])
        if more and rows:
            reply.next_page_token = self._deps.page_tokens.issue(
                QUARANTINE_PAGE, filters, (rows[-1].quarantine_id,)
            )
        return reply


class RegistrySyncModule:
    name = SERVICE
    service_names: tuple[str, ...] = ("ppos.controlplane.registrysync.v1.RegistrySyncService",)

    def __init__(self, deps: RegistrySyncDeps) -> None:
        self._deps = deps
        settings = deps.settings
        self._clients = {
            region: RegistryClient(region, address, deps.minter, tls=deps.tls)
            for region, address in settings.regions.items()
        }
        self._bus = StatusBus()
        # One meter for the sweeps and the read-backs of VerifyMirror(against_source).
        meter = Meter(
            Rates(
                records_per_second=settings.records_per_second,
                bytes_per_second=settings.bytes_per_second,
                region_records_per_second=settings.region_records_per_second,
                region_bytes_per_second=settings.region_bytes_per_second,
                burst_seconds=settings.burst,
            )
        )
        backoff = Backoff(settings.retry_base, settings.retry_max, settings.retry_attempts)
        context = SweepContext(
            db=deps.db,
            settings=settings,
            meter=meter,
            bus=self._bus,
            backoff=backoff,
            lag=LagGauges(),
            sign_checkpoint=functools.partial(deps.minter.sign_statement, typ=CHECKPOINT_TYP),
            checkpoint_keys=deps.checkpoint_keys,
        )
        self.verifier = MirrorVerifier(deps.db, deps.checkpoint_keys, sorted(settings.regions))
        readback = ReadbackSettings(
            page_records=settings.page_records,
            page_bytes=settings.page_bytes,
            max_payload_bytes=settings.max_payload_bytes,
            call_timeout=float(settings.call_timeout),
        )
        self.source_verifier = SourceVerifier(
            deps.db,
            {
                region: SourceReader(client, meter, backoff, readback)
                for region, client in self._clients.items()
            },
        )
        self.scheduler = SyncScheduler(
            context,
            self._clients,
            leadership_for(deps.database_url, status_reads.SYNC_LEADER_LOOP, key=SYNC_LEADER_KEY),
            stop_grace=deps.shutdown_grace,
        )

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RegistrySyncServiceServicer_to_server(
            RegistrySyncServicer(
                self._deps, self.scheduler, self._bus, self.verifier, self.source_verifier
            ),
            server,
        )

    async def start(self) -> None:
        await self.scheduler.start()
        self.verifier.start(self._deps.settings.verify_interval)

    async def stop(self) -> None:
        await self.verifier.stop()
        await self.scheduler.stop()
        for client in self._clients.values():
            await client.close()
