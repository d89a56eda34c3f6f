"""Governance policies: which actions a governance state triggers, and dry runs of them."""

from __future__ import annotations

import grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.common.v1 import resource_pb2 as common_pb
from ppos.controlplane.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.core.validation import OBJECT_ID, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.services.governance.common import (
    GOVERNANCE_SERVICE,
    Context,
)
from ppos.controlplane.services.governance.convert import (
    planned_actions_to_proto,
    policy_to_proto,
)
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.peers import NodeFacts, Nodes, PeerStubs, SyncedJobs
from ppos.controlplane.services.governance.policy import backfill, decisions, store
from ppos.controlplane.services.governance.policy.cursor import read_cursor
from ppos.controlplane.services.governance.policy.evaluation import JobView, PolicyView, plan
from ppos.controlplane.services.governance.policy.policy_changes import (
    check_policy_references,
    delete_policy,
    set_policy,
)
from ppos.controlplane.services.governance.policy.specs import ParsedPolicy, parse_policy_spec
from ppos.controlplane.services.governance.resources import lookups

DEFAULT_DRY_RUN_LIMIT = 20
MAX_DRY_RUN_JOBS = 200
DRY_RUN_MAX_PAGES = 50
POLICIES_PAGE = Listing(GOVERNANCE_SERVICE + "ListGovernancePolicies", Ident("policy_id"))


def peer_refusal(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    """A peer's error as ours: its NOT_FOUND stays NOT_FOUND, the rest is UNAVAILABLE."""
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound("synced job", what, f"{what}: {exc.details()}")
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument.single("jobs", f"{what}: {exc.details()}")
    return Unavailable(
        f"cannot read {what} from the registry sync service now ({exc.code().name}); "
        "retry the call",
        reason="PEER_UNAVAILABLE",
    )


def _view(policy_id: str, generation: int, parsed: ParsedPolicy) -> PolicyView:
    return PolicyView(
        policy_id=policy_id,
        generation=generation,
        tenant_scope=parsed.tenant_scope,
        trigger_state=parsed.trigger_state,
        actions=parsed.actions,
        enabled=parsed.enabled,
        node_failure_threshold=parsed.node_failure_threshold,
        node_failure_window_seconds=parsed.node_failure_window_seconds,
    )


class PolicyHandlers(HandlerBase):
    rpcs = (
        "SetGovernancePolicy",
        "GetGovernancePolicy",
        "ListGovernancePolicies",
        "DeleteGovernancePolicy",
        "DryRunGovernancePolicy",
    )

    def __init__(self, deps: GovernanceDeps) -> None:
        super().__init__(deps)
        self._peers = PeerStubs(deps)  # dry runs read synced jobs and node facts

    async def SetGovernancePolicy(
        self, request: pb.SetGovernancePolicyRequest, context: Context
    ) -> pb.SetGovernancePolicyResponse:
        violations = Violations()
        violations.resource_id("policy_id", request.policy_id)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        parsed = parse_policy_spec("spec", request.spec)
        regions = self._gateway_regions
        try:
            row = await self._write(lambda session: set_policy(session, request, parsed, regions))
        except IntegrityError:
            raise AlreadyExists(
                "governance policy",
                request.policy_id,
                "a concurrent change took this policy's scope and state; read and retry",
                reason="POLICY_SCOPE_TAKEN",
            ) from None
        return pb.SetGovernancePolicyResponse(policy=policy_to_proto(row))

    async def GetGovernancePolicy(
        self, request: pb.GetGovernancePolicyRequest, context: Context
    ) -> pb.GetGovernancePolicyResponse:
        violations = Violations()
        violations.resource_id("policy_id", request.policy_id)
        violations.raise_if_any()
        row = await self._db.read(lambda s: lookups.policy(s, request.policy_id, lock=False))
        return pb.GetGovernancePolicyResponse(policy=policy_to_proto(row))

    async def ListGovernancePolicies(
        self, request: pb.ListGovernancePoliciesRequest, context: Context
    ) -> pb.ListGovernancePoliciesResponse:
        violations = Violations()
        if request.tenant_id:
            violations.resource_id("tenant_id", request.tenant_id)
        violations.raise_if_any()
        page = self._page(
            POLICIES_PAGE, request.page_size, request.page_token, {"t": request.tenant_id}
        )

        rows = await self._db.read(
            lambda session: store.policy_page(session, page, tenant_id=request.tenant_id)
        )
        return pb.ListGovernancePoliciesResponse(
            policies=[policy_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )

    async def DeleteGovernancePolicy(
        self, request: pb.DeleteGovernancePolicyRequest, context: Context
    ) -> pb.DeleteGovernancePolicyResponse:
        violations = Violations()
        violations.resource_id("policy_id", request.policy_id)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()

        shown = await self._write(lambda session: delete_policy(session, request))
        return pb.DeleteGovernancePolicyResponse(policy=shown)

    # -- dry run ------------------------------------------------------------------

    async def DryRunGovernancePolicy(
        self, request: pb.DryRunGovernancePolicyRequest, context: Context
    ) -> pb.DryRunGovernancePolicyResponse:
        violations = Violations()
        if bool(request.policy_id) == request.HasField("spec"):
            violations.add("policy_id", "give exactly one of policy_id and spec")
        elif request.policy_id:
            violations.resource_id("policy_id", request.policy_id)
        if not 0 <= request.limit <= MAX_DRY_RUN_JOBS:
            violations.add("limit", f"must be between 0 and {MAX_DRY_RUN_JOBS}")
        bounded = violations.at_most("jobs", request.jobs, MAX_DRY_RUN_JOBS, "jobs")
        for index, ref in enumerate(request.jobs if bounded else ()):
            if not ref.region or not ref.job_id or ref.revision < 0:
                violations.add(f"jobs[{index}]", "needs region, job_id and a revision >= 0")
                continue
            violations.region(f"jobs[{index}].region", ref.region)
            violations.syntax(f"jobs[{index}].job_id", ref.job_id, OBJECT_ID)
        violations.raise_if_any()
        policy = await self._dry_run_policy(request)
        try:
            jobs, backfill_jobs = await self._dry_run_jobs(request, policy)
        except grpc.aio.AioRpcError as exc:
            raise peer_refusal(exc, "synced jobs") from None
        except ConfigError as exc:
            raise FailedPrecondition(
                f"cannot read synced jobs: {exc}", reason="PEER_NOT_CONFIGURED"
            ) from None
        nodes = Nodes(self._peers)
        shown = [await self._dry_run_one(job, policy, nodes) for job in jobs]
        return pb.DryRunGovernancePolicyResponse(
            decisions=shown, backfill_jobs=backfill_jobs, backfill_limit=backfill.LIMIT
        )

    async def _dry_run_policy(self, request: pb.DryRunGovernancePolicyRequest) -> PolicyView:
        if request.policy_id:
            row = await self._db.read(lambda s: lookups.policy(s, request.policy_id, lock=False))
            return decisions.policy_view(row)
        parsed = parse_policy_spec("spec", request.spec)
        regions = self._gateway_regions
        await self._db.read(lambda s: check_policy_references(s, parsed, regions))
        return _view("(unsaved)", 0, parsed)

    async def _dry_run_jobs(
        self, request: pb.DryRunGovernancePolicyRequest, policy: PolicyView
    ) -> tuple[list[JobView], int]:
        """The jobs to show, and how many already-synced jobs the policy's backfill would act on."""
        synced = SyncedJobs(self._peers)
        if request.jobs:
            found = []
            for ref in request.jobs:
                try:
                    found.append(await synced.get(ref.region, ref.job_id, ref.revision))
                except grpc.aio.AioRpcError as exc:
                    raise peer_refusal(exc, f"{ref.region}/{ref.job_id}@{ref.revision}") from None
            return found, 0
        limit = request.limit or DEFAULT_DRY_RUN_LIMIT
        after, up_to = backfill.window(await self._db.read(read_cursor))
        latest: list[JobView] = []
        backfill_jobs = 0
        for _ in range(DRY_RUN_MAX_PAGES):
            page = await synced.page(after, [policy.trigger_state], 1000)
            in_scope = [j for j in page.jobs if _in_scope(j, policy)]
            latest = (latest + in_scope)[-limit:]
            window = [j for j in in_scope if j.sync_sequence <= up_to]
            if backfill_jobs < backfill.LIMIT and window:
                backfill_jobs += await self._db.read(
                    lambda s, jobs=window: _would_backfill(s, jobs, policy)  # type: ignore[misc]
                )
            if not page.has_more or not page.jobs:
                break
            after = page.last_sync_sequence
        return latest, min(backfill_jobs, backfill.LIMIT)

    async def _dry_run_one(self, job: JobView, policy: PolicyView, nodes: Nodes) -> res_pb.Decision:
        notes = []
        if job.governance_state != policy.trigger_state:
            notes.append(
                f"the job is {job.governance_state}; the policy triggers on "
                f"{policy.trigger_state}: no action."
            )
        node = NodeFacts(known=None)
        if not notes and job.node_id:
            try:
                node = await nodes.facts(job.node_id)
            except grpc.aio.AioRpcError as exc:
                notes.append(f"node registry unreachable ({exc.code().name}); node facts unknown.")
            except ConfigError:
                notes.append("no node registry configured; node facts unknown.")

        def work(session: Session) -> tuple[str, list[dict[str, str]], str]:
            owner = decisions.applicable_policy(session, job.tenant_id, job.governance_state)
            shadow = ""
            if owner is not None and owner.policy_id != policy.policy_id:
                shadow = (
                    f"note: the reconciler would apply policy {owner.policy_id} to this job, "
                    "not this one."
                )
            if notes:
                return "", [], shadow
            context = decisions.gather_context(session, job, policy, node)
            steps = plan(job, policy, context, "")
            actions = [
                {"kind": s.kind, "description": s.description, "target": s.target}
                for s in steps.steps
            ]
            return steps.rationale(job, policy), actions, shadow

        rationale, actions, shadow = await self._db.read(work)
        text = " ".join(part for part in ("dry run:", rationale or " ".join(notes), shadow) if part)
        return res_pb.Decision(
            job=common_pb.JobRef(region=job.region, job_id=job.job_id, revision=job.revision),
            canonical_payload_sha256=job.payload_sha256,
            governance_state=GOVERNANCE_STATE.to_proto(job.governance_state),
            policy_id=policy.policy_id,
            actions=planned_actions_to_proto(actions),
            rationale=text,
            tenant_id=job.tenant_id,
            queue_id=job.queue_id,
            node_id=job.node_id,
        )


def _in_scope(job: JobView, policy: PolicyView) -> bool:
    return not policy.tenant_scope or job.tenant_id == policy.tenant_scope


def _would_backfill(session: Session, jobs: list[JobView], policy: PolicyView) -> int:
    """How many of `jobs` the policy's backfill would decide: those it owns, not yet decided."""
    count = 0
    for job in jobs:
        owner = decisions.applicable_policy(session, job.tenant_id, job.governance_state)
        other = owner is not None and owner.policy_id != policy.policy_id
        if other and owner is not None and owner.tenant_scope != policy.tenant_scope:
            continue  # another policy (a tenant's over a global one) applies
        if not decisions.already_decided(session, job, policy.policy_id):
            count += 1
    return count
