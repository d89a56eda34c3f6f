"""Simulated regional preflight gateway: a test double of someone else's system.

It honours the contract's idempotency rule: the first call with a key is
acted on and acknowledged; any later call with the same key (and the same
request) gets that first acknowledgement back with `duplicate=true` and
changes nothing. A key reused for a different request is refused with
ALREADY_EXISTS. Queue policies and routes follow "newer generation wins".
Each queue runs its jobs in slots (slots.py): capacity slots, admitted by
priority then arrival; a newer queue policy re-admits waiting jobs.

It records every call it receives (method, key, request, whether it was a
duplicate, the call's metadata) in memory and, with `--gateway-record FILE`,
as JSON lines, so tests can prove what the control plane sent and that
nothing was acted on twice. Faults on request: UNAVAILABLE (a rate, or the
next N calls), slow calls (before acting) and late acknowledgements (after
acting), dropped acknowledgements (the command is acted on, then the call
fails as if the connection dropped), refusals (INVALID_ARGUMENT) and partners it
cannot reach (UNAVAILABLE, ErrorInfo PARTNER_UNREACHABLE, nothing done).

Authentication is not here: the server's interceptor (preflightsim.auth)
refuses any call without a PREFLIGHT_JWT for this gateway's audience.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ppos.preflight.v1 import gateway_service_pb2 as pb
from ppos.preflight.v1 import gateway_service_pb2_grpc as pb_grpc
from ppos.preflightsim.gateway_state import GatewayFaults, GatewayState, ReceivedCall
from ppos.preflightsim.logs import private_opener
from ppos.preflightsim.slots import ACTIVE, DRAINING, QueueSlots

SERVICE_NAME = "ppos.preflight.v1.PreflightGatewayService"
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class _Outcome:
    method: str
    digest: str
    ack: pb.CommandAck


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _metadata(context: Context) -> list[tuple[str, str]]:
    items = []
    for key, value in context.invocation_metadata() or ():
        items.append((key, value if isinstance(value, str) else value.decode("latin-1")))
    return items


class SimulatedGateway(pb_grpc.PreflightGatewayServiceServicer):
    """The gateway of one region, all in memory."""

    def __init__(
        self,
        region: str,
        *,
        faults: GatewayFaults | None = None,
        record_path: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.region = region
        self.faults = faults or GatewayFaults()
        self.state = GatewayState()
        # Each queue's slots, shaped by the newest queue policy received.
        self.slots: dict[tuple[str, str], QueueSlots] = {}
        self.calls: list[ReceivedCall] = []
        self._outcomes: dict[str, _Outcome] = {}
        self._record_path = record_path
        self._file_lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self._counter = 0
        self.in_flight = 0
        self._changed = asyncio.Condition()

    # -- test helpers -------------------------------------------------------------

    def applied(self, method: str | None = None) -> list[ReceivedCall]:
        """Calls that were acted on (first acceptance of a key)."""
        return [
            c
            for c in self.calls
            if c.outcome in ("applied", "superseded") and (method is None or c.method == method)
        ]

    def submit_job(self, tenant_id: str, queue_id: str, job_id: str, priority: int = 0) -> bool:
        """A job arrives at a queue the gateway holds; True if it runs now, False if it waits."""
        return self._slots_of(tenant_id, queue_id).submit(job_id, priority)

    def finish_job(self, tenant_id: str, queue_id: str, job_id: str) -> list[str]:
        """A running job ends; the jobs its slot admitted."""
        return self._slots_of(tenant_id, queue_id).finish(job_id)

    def _slots_of(self, tenant_id: str, queue_id: str) -> QueueSlots:
        found = self.slots.get((tenant_id, queue_id))
        if found is None:
            raise LookupError(f"no queue policy received for {tenant_id}/{queue_id}")
        return found

    async def wait_for(self, predicate: Callable[[SimulatedGateway], bool]) -> None:
        """Wait until `predicate(self)` holds (wrap in asyncio.timeout to bound it)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # -- the contract -----------------------------------------------------------------

    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        ack = await self._handle("RetryJob", request, context, self._retry)
        return pb.RetryJobResponse(ack=ack)

    async def RerouteJob(
        self, request: pb.RerouteJobRequest, context: Context
    ) -> pb.RerouteJobResponse:
        ack = await self._handle("RerouteJob", request, context, self._reroute)
        return pb.RerouteJobResponse(ack=ack)

    async def RequestRemainder(
        self, request: pb.RequestRemainderRequest, context: Context
    ) -> pb.RequestRemainderResponse:
        ack = await self._handle("RequestRemainder", request, context, self._remainder)
        return pb.RequestRemainderResponse(ack=ack)

    async def RouteJobToReview(
        self, request: pb.RouteJobToReviewRequest, context: Context
    ) -> pb.RouteJobToReviewResponse:
        ack = await self._handle("RouteJobToReview", request, context, self._review)
        return pb.RouteJobToReviewResponse(ack=ack)

    async def ApplyQueuePolicy(
        self, request: pb.ApplyQueuePolicyRequest, context: Context
    ) -> pb.ApplyQueuePolicyResponse:
        ack = await self._handle("ApplyQueuePolicy", request, context, self._queue_policy)
        return pb.ApplyQueuePolicyResponse(ack=ack)

    async def ApplyPartnerRoute(
        self, request: pb.ApplyPartnerRouteRequest, context: Context
    ) -> pb.ApplyPartnerRouteResponse:
        ack = await self._handle("ApplyPartnerRoute", request, context, self._route)
        return pb.ApplyPartnerRouteResponse(ack=ack)

    async def GetCommandOutcome(
        self, request: pb.GetCommandOutcomeRequest, context: Context
    ) -> pb.GetCommandOutcomeResponse:
        outcome = self._outcomes.get(request.idempotency_key)
        if outcome is None:
            return pb.GetCommandOutcomeResponse(found=False)
        return pb.GetCommandOutcomeResponse(
            found=True, ack=outcome.ack, method=f"/{SERVICE_NAME}/{outcome.method}"
        )

    # -- one command ----------------------------------------------------------------

    async def _handle(
        self,
        method: str,
        request: Any,
        context: Context,
        act: Callable[[Any], bool],
    ) -> pb.CommandAck:
        call = ReceivedCall(
            method=method,
            idempotency_key=request.header.idempotency_key,
            request=_as_dict(request),
            outcome="",
            dropped=False,
            metadata=_metadata(context),
            receive_time=time.time(),
        )
        self.in_flight += 1
        await self._notify()
        try:
            return await self._answer(method, request, context, act, call)
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _answer(
        self,
        method: str,
        request: Any,
        context: Context,
        act: Callable[[Any], bool],
        call: ReceivedCall,
    ) -> pb.CommandAck:
        faults = self.faults
        key = call.idempotency_key
        if faults.slow_seconds > 0:
            await asyncio.sleep(faults.slow_seconds)
        if faults.unavailable_next > 0 or (
            faults.unavailable_rate and self._rng.random() < faults.unavailable_rate
        ):
            faults.unavailable_next = max(0, faults.unavailable_next - 1)
            await self._record(call, "unavailable")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated gateway unavailable")
        problem = self._invalid(method, request)
        if not problem and faults.refuse_next > 0:
            faults.refuse_next -= 1
            problem = "simulated refusal"
        if problem:
            await self._record(call, "refused")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        earlier = self._outcomes.get(key)
        if earlier is not None:
            if earlier.method != method or earlier.digest != digest:
                await self._record(call, "refused")
                await context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"idempotency key {key!r} was used for another request",
                )
            ack = pb.CommandAck()
            ack.CopyFrom(earlier.ack)
            ack.duplicate = True
            call.command_id = ack.command_id
            outcome = "duplicate"
        else:
            partner = _partner_needed(method, request)
            if partner in faults.unreachable_partners:
                await self._record(call, "partner_unreachable")
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"partner {partner} cannot be reached",
                    trailing_metadata=_partner_unreachable(partner),
                )
            self._counter += 1
            accept = timestamp_pb2.Timestamp()
            accept.GetCurrentTime()
            ack = pb.CommandAck(
                command_id=f"gw-{self.region}-{self._counter:06d}", accept_time=accept
            )
            self._outcomes[key] = _Outcome(method, digest, ack)
            call.command_id = ack.command_id
            outcome = "applied" if act(request) else "superseded"
        drop = faults.drop_next > 0 or (faults.drop_rate and self._rng.random() < faults.drop_rate)
        if drop:
            faults.drop_next = max(0, faults.drop_next - 1)
            call.dropped = True
        # Recorded as soon as it is acted on: if the caller goes away while the
        # ack is late, the gateway has still done it (and will say so next time).
        await self._record(call, outcome)
        if faults.slow_ack_seconds > 0:
            await asyncio.sleep(faults.slow_ack_seconds)
        if drop:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "simulated connection drop after accepting"
            )
        return ack

    @staticmethod
    def _invalid(method: str, request: Any) -> str:
        header = request.header
        if not header.idempotency_key:
            return "header.idempotency_key is required"
        if not header.reason:
            return "header.reason is required"
        job_methods = ("RetryJob", "RerouteJob", "RequestRemainder", "RouteJobToReview")
        if method in job_methods and not request.job_id:
            return "job_id is required"
        if method == "ApplyQueuePolicy" and (
            not request.tenant_id or not request.queue_id or request.capacity < 1
        ):
            return "tenant_id, queue_id and a positive capacity are required"
        if method == "ApplyPartnerRoute" and (not request.route_id or not request.partner_id):
            return "route_id and partner_id are required"
        return ""

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _record(self, call: ReceivedCall, outcome: str) -> None:
        call.outcome = outcome
        self.calls.append(call)
        if self._record_path is not None:
            line = json.dumps(asdict(call), sort_keys=True) + "\n"
            # One short line to a local file, as before with Path.open (a test double).
            record = open(self._record_path, "a", opener=private_opener)  # noqa: ASYNC230, SIM115
            with self._file_lock, record as handle:
                handle.write(line)
        await self._notify()

    # -- effects (first acceptance only) ---------------------------------------------

    def _retry(self, request: pb.RetryJobRequest) -> bool:
        self.state.retries.append(_as_dict(request))
        slots = self.slots.get((request.tenant_id, request.queue_id))
        if slots is not None and slots.state != DRAINING:
            slots.submit(request.job_id)  # the new attempt waits for a slot in its queue
        return True

    def _reroute(self, request: pb.RerouteJobRequest) -> bool:
        self.state.reroutes.append(_as_dict(request))
        return True

    def _remainder(self, request: pb.RequestRemainderRequest) -> bool:
        self.state.remainders.append(_as_dict(request))
        return True

    def _review(self, request: pb.RouteJobToReviewRequest) -> bool:
        self.state.reviews.append(_as_dict(request))
        return True

    def _queue_policy(self, request: pb.ApplyQueuePolicyRequest) -> bool:
        key = (request.tenant_id, request.queue_id)
        current = self.state.queues.get(key)
        if current is not None and current["generation"] >= request.generation:
            return False  # an older policy arriving late: newer wins
        self.state.queues[key] = {
            "capacity": request.capacity,
            "state": pb.QueueState.Name(request.state),
            "generation": request.generation,
        }
        state = pb.QueueState.Name(request.state).removeprefix("QUEUE_STATE_")
        slots = self.slots.setdefault(key, QueueSlots(request.capacity, state))
        slots.apply(request.capacity, state if state != "UNSPECIFIED" else ACTIVE)
        return True

    def _route(self, request: pb.ApplyPartnerRouteRequest) -> bool:
        current = self.state.routes.get(request.route_id)
        if current is not None and current["generation"] >= request.generation:
            return False
        self.state.routes[request.route_id] = {
            "tenant_id": request.tenant_id,
            "queue_id": request.queue_id,
            "partner_id": request.partner_id,
            "priority": request.priority,
            "deleted": request.delete,
            "generation": request.generation,
        }
        return True


def _partner_needed(method: str, request: Any) -> str:
    """The partner a command hands work to ('' when it needs none: a route's removal too)."""
    if method == "RerouteJob":
        return str(request.target_partner_id)
    if method == "RouteJobToReview":
        return str(request.partner_id)
    if method == "ApplyPartnerRoute" and not request.delete:
        return str(request.partner_id)
    return ""


def _partner_unreachable(partner: str) -> tuple[tuple[str, bytes], ...]:
    """The rich status of a PARTNER_UNREACHABLE answer, as trailing metadata."""
    info = error_details_pb2.ErrorInfo(
        reason="PARTNER_UNREACHABLE",
        domain="preflight.gateway",
        metadata={"partner_id": partner},
    )
    status = status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message=f"partner {partner} cannot be reached"
    )
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)
