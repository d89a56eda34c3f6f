"""RegistrySyncService: sync status, sweeps, synced jobs and the quarantine."""

from __future__ import annotations

from collections.abc import Iterable

from ppos.controlplane.client.connection import Connection, Stream, new_request_id
from ppos.controlplane.client.governance import collect
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc
from ppos.preflight.v1 import job_pb2

SERVICE = "ppos.controlplane.registrysync.v1.RegistrySyncService"


class RegistrySyncClient:
    """Operator calls of the registry sync service."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._stub = pb_grpc.RegistrySyncServiceStub(connection.channel)

    def list_statuses_reply(self) -> pb.ListSyncStatusesResponse:
        """Every region's status and the scheduler's lead (`leader`, unset if never led)."""
        return self._conn.unary(
            self._stub.ListSyncStatuses, pb.ListSyncStatusesRequest(), name="ListSyncStatuses"
        )

    def list_statuses(self) -> list[pb.RegionSyncStatus]:
        return list(self.list_statuses_reply().statuses)

    def get_status_reply(self, region: str) -> pb.GetSyncStatusResponse:
        request = pb.GetSyncStatusRequest(region=region)
        return self._conn.unary(self._stub.GetSyncStatus, request, name="GetSyncStatus")

    def get_status(self, region: str) -> pb.RegionSyncStatus:
        return self.get_status_reply(region).status

    def watch_status(self, regions: Iterable[str] = ()) -> Stream[pb.WatchSyncStatusResponse]:
        request = pb.WatchSyncStatusRequest(regions=list(regions))
        return self._conn.stream(self._stub.WatchSyncStatus, request, name="WatchSyncStatus")

    def start_sweep(
        self, regions: Iterable[str] = (), *, request_id: str | None = None
    ) -> pb.Sweep:
        request = pb.StartSweepRequest(
            regions=list(regions), request_id=request_id or new_request_id("sweep")
        )
        return self._conn.unary(self._stub.StartSweep, request, name="StartSweep").sweep

    def get_sweep(self, sweep_id: str) -> pb.Sweep:
        request = pb.GetSweepRequest(sweep_id=sweep_id)
        return self._conn.unary(self._stub.GetSweep, request, name="GetSweep").sweep

    def list_sweeps(
        self,
        *,
        states: Iterable[pb.SweepState.ValueType] = (),
        page_size: int = 0,
        limit: int = 0,
    ) -> pb.ListSweepsResponse:
        """Sweeps newest first, all pages merged (at most `limit` when given)."""

        def fetch(token: str) -> pb.ListSweepsResponse:
            request = pb.ListSweepsRequest(
                states=list(states), page_size=page_size, page_token=token
            )
            return self._conn.unary(self._stub.ListSweeps, request, name="ListSweeps")

        return collect(fetch, "sweeps", limit)

    def cancel_sweep(self, sweep_id: str) -> pb.Sweep:
        request = pb.CancelSweepRequest(sweep_id=sweep_id)
        return self._conn.unary(self._stub.CancelSweep, request, name="CancelSweep").sweep

    def verify_mirror(
        self,
        regions: Iterable[str] = (),
        *,
        against_source: bool = False,
        max_divergences: int = 0,
        check_payloads: bool = False,
    ) -> list[pb.MirrorVerification]:
        """The regions' mirrors (default: all) checked against their chains and checkpoints,
        with `check_payloads` every payload against its digest too, and with
        `against_source` against what each region's registry serves now."""
        request = pb.VerifyMirrorRequest(
            regions=list(regions),
            against_source=against_source,
            max_divergences=max_divergences,
            check_payloads=check_payloads,
        )
        reply = self._conn.unary(self._stub.VerifyMirror, request, name="VerifyMirror")
        return list(reply.verifications)

    def get_job(self, region: str, job_id: str, *, revision: int = 0) -> pb.SyncedJob:
        """One synced revision (0: the newest) with its payload exactly as received."""
        request = pb.GetSyncedJobRequest(region=region, job_id=job_id, revision=revision)
        return self._conn.unary(self._stub.GetSyncedJob, request, name="GetSyncedJob").job

    def list_jobs(
        self,
        *,
        region: str = "",
        governance_states: Iterable[job_pb2.GovernanceState.ValueType] = (),
        job_id: str = "",
        after_sync_sequence: int = 0,
        page_size: int = 0,
        omit_payload: bool = True,
        limit: int = 0,
    ) -> pb.ListSyncedJobsResponse:
        """Synced revisions in sync order, following `has_more` up to `limit`."""
        merged = pb.ListSyncedJobsResponse(last_sync_sequence=after_sync_sequence)
        while True:
            request = pb.ListSyncedJobsRequest(
                region=region,
                governance_states=list(governance_states),
                after_sync_sequence=merged.last_sync_sequence,
                page_size=page_size,
                omit_payload=omit_payload,
                job_id=job_id,
            )
            page = self._conn.unary(self._stub.ListSyncedJobs, request, name="ListSyncedJobs")
            merged.jobs.extend(page.jobs)
            merged.has_more = page.has_more
            if page.jobs:
                merged.last_sync_sequence = page.last_sync_sequence
            if not page.has_more or not page.jobs or (limit and len(merged.jobs) >= limit):
                if limit and len(merged.jobs) > limit:
                    del merged.jobs[limit:]
                    merged.has_more = True
                    merged.last_sync_sequence = merged.jobs[-1].sync_sequence
                return merged

    def list_quarantine_page(
        self, *, region: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListQuarantinedRecordsResponse:
        """One page of quarantined records (a browser pages through them)."""
        request = pb.ListQuarantinedRecordsRequest(
            region=region, page_size=page_size, page_token=page_token
        )
        return self._conn.unary(
            self._stub.ListQuarantinedRecords, request, name="ListQuarantinedRecords"
        )

    def list_quarantine(
        self, *, region: str = "", page_size: int = 0, limit: int = 0
    ) -> pb.ListQuarantinedRecordsResponse:
        def fetch(token: str) -> pb.ListQuarantinedRecordsResponse:
            return self.list_quarantine_page(region=region, page_size=page_size, page_token=token)

        return collect(fetch, "records", limit)
