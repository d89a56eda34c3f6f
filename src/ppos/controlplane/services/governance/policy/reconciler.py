"""The reconciler: turns newly synced job revisions into governance decisions.

It reads synced jobs only through RegistrySyncService.ListSyncedJobs, after
the sync sequence it reached last (kept in the database), in the governance
states policies can act on. For each revision it picks the applicable policy
(a tenant's wins over the global one), gathers what the plan needs, and writes
the decision with its commands in one transaction. The decision's unique key
makes it act at most once per (job, revision, policy), whoever runs it. A peer
that cannot be reached holds the reconciler where it is (nothing is skipped);
it tries again on its next round. Once caught up with new jobs, a round also
works one page of a policy's backfill (backfill.py): the jobs synced before
the policy was enabled or changed.

One replica leads (storage/leadership.py: an advisory lock and a lease on
PostgreSQL, a file lock on SQLite); the others stand by and try to take the
lead every LEAD_RETRY seconds. Every write of the leader (decisions with their
commands, the cursor, backfill progress) checks its lead's generation in the
same transaction, so a leader that was frozen or cut off and replaced cannot
write when it wakes up. On shutdown the lead is released at once, before the
round in progress ends (its remaining writes are refused), so a standby takes
over within a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.security.principal import current_principal, internal
from ppos.controlplane.services.governance.common import wait_either
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.enums import TRIGGER_STATES
from ppos.controlplane.services.governance.peers import NodeFacts, Nodes, SyncedJobs
from ppos.controlplane.services.governance.policy import backfill, decisions
from ppos.controlplane.services.governance.policy.cursor import advance_cursor, read_cursor
from ppos.controlplane.services.governance.policy.evaluation import JobView, plan
from ppos.controlplane.storage.leadership import Leadership
from ppos.controlplane.storage.leases import LeadershipLost, fenced

_log = structlog.get_logger("ppos.governance.reconciler")
RECONCILER = internal("reconciler")
# How often a standby tries to take the lead (a released one passes within it).
LEAD_RETRY = 1.0
T = TypeVar("T")


class Reconciler:
    def __init__(
        self,
        deps: GovernanceDeps,
        *,
        synced: SyncedJobs,
        nodes: Nodes,
        leadership: Leadership,
        on_commands: Callable[[], None],
    ) -> None:
        self._db = deps.db
        self._settings = deps.settings
        self._synced = synced
        self._nodes = nodes
        self.leadership = leadership
        self._on_commands = on_commands
        self._wake = asyncio.Event()
        self.last_error = ""

    def wake(self) -> None:
        self._wake.set()

    def _write(self, work: Callable[[Session], T]) -> Awaitable[T]:
        """A write of the leader, fenced by its lead's generation (LeadershipLost
        once another replica has taken the lead, or this one has let it go)."""
        return self._db.write(fenced(self.leadership.fence(), work))

    async def _release_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.leadership.release()

    async def run(self, stop: asyncio.Event) -> None:
        token = current_principal.set(RECONCILER)
        # Released the moment the replica stops, not after the round in progress.
        releasing = asyncio.create_task(self._release_on(stop), name="reconciler-release")
        try:
            while not stop.is_set():
                busy = False
                leading = False
                try:
                    leading = await self.leadership.acquire()
                    if leading and not stop.is_set():
                        busy = await self.reconcile_once() > 0
                    self.last_error = ""
                except asyncio.CancelledError:
                    raise
                except LeadershipLost:
                    # Replaced while frozen or cut off: the write changed nothing.
                    _log.warning("reconciler.lead_superseded")
                    await self.leadership.release()
                    leading = False
                except grpc.aio.AioRpcError as exc:
                    # A peer is unreachable: hold here, nothing is skipped.
                    self.last_error = f"{exc.code().name}: {exc.details()}"
                    _log.warning("reconciler.peer_error", error=self.last_error)
                except ConfigError as exc:
                    self.last_error = f"not configured: {exc}"
                    _log.warning("reconciler.peer_not_configured", error=self.last_error)
                except Exception as exc:  # noqa: BLE001 - the loop must survive a bad round
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    _log.exception("reconciler.round_failed")
                if busy:
                    continue
                self._wake.clear()
                wait = float(self._settings.reconciler_interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait if leading else min(wait, LEAD_RETRY)):
                        await wait_either(stop, self._wake)
        finally:
            current_principal.reset(token)
            releasing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await releasing
            await self.leadership.release()

    async def reconcile_once(self) -> int:
        """Decide the next page of synced jobs; returns how many were read."""
        after = await self._db.read(read_cursor)
        page = await self._synced.page(
            after, list(TRIGGER_STATES), self._settings.reconciler_page_size
        )
        for job in page.jobs:
            await self.decide(job)
        if page.jobs:
            _log.info(
                "reconciler.page", jobs=len(page.jobs), last_sync_sequence=page.last_sync_sequence
            )
        if page.has_more:
            return len(page.jobs)
        return len(page.jobs) + await self.backfill_once()

    async def backfill_once(self) -> int:
        """Work one page of the oldest pending backfill; returns how many jobs were read."""
        due = await self._db.read(backfill.next_due)
        if due is None:
            return 0
        policy_row = await self._db.read(lambda s: decisions.policy_by_id(s, due.policy_id))
        if policy_row is None or not policy_row.enabled or policy_row.generation != due.generation:
            return 0  # the policy's own write replaced or removed this backfill meanwhile
        policy = decisions.policy_view(policy_row)
        page = await self._synced.page(
            due.after_sequence, [policy.trigger_state], self._settings.reconciler_page_size
        )
        position, evaluated = due.after_sequence, due.evaluated
        for job in page.jobs:
            if evaluated >= backfill.LIMIT:
                break
            if job.sync_sequence > due.up_to_sequence:
                position = due.up_to_sequence  # past the window: new jobs are the main loop's
                break
            if await self.decide(job, only_policy=policy.policy_id):
                evaluated += 1  # a new decision: one already made does not count to the limit
            position = job.sync_sequence
        if not page.has_more and evaluated < backfill.LIMIT:
            position = due.up_to_sequence  # nothing more of the window to read
        finished = position >= due.up_to_sequence or evaluated >= backfill.LIMIT
        progress = backfill.Backfill(
            due.policy_id, due.generation, position, due.up_to_sequence, evaluated
        )
        await self._write(lambda s: backfill.advance(s, progress, finished=finished))
        _log.info(
            "reconciler.backfill",
            policy_id=due.policy_id,
            evaluated=evaluated,
            position=position,
            finished=finished,
        )
        return len(page.jobs)

    async def decide(self, job: JobView, *, only_policy: str = "") -> str | None:
        """Decide one synced revision under the policy that applies to it.

        Returns the decision id, '' when the policy had decided it already, None
        when no enabled policy (or, for a backfill, not `only_policy`) applies.
        """
        policy_row = await self._db.read(
            lambda s: decisions.applicable_policy(s, job.tenant_id, job.governance_state)
        )
        if only_policy and (policy_row is None or policy_row.policy_id != only_policy):
            return None  # a backfill acts for its own policy only
        if policy_row is None or not policy_row.enabled:
            await self._write(lambda s: advance_cursor(s, job.sync_sequence))
            return None
        policy = decisions.policy_view(policy_row)
        node = NodeFacts(known=None)
        if job.node_id and any(
            a["kind"] in ("REIMAGE_NODE", "CORDON_NODE") for a in policy.actions
        ):
            node = await self._facts(job.node_id)
        decision_id = new_id("dec")

        def work(session: Session) -> str:
            context = decisions.gather_context(session, job, policy, node)
            steps = plan(job, policy, context, decision_id)
            decisions.write_decision(session, job, policy, steps, decision_id)
            advance_cursor(session, job.sync_sequence)
            return decision_id

        try:
            await self._write(work)
        except IntegrityError:
            # Already decided (a replay, or another leader got there first).
            await self._write(lambda s: advance_cursor(s, job.sync_sequence))
            _log.info("reconciler.already_decided", job=job.ref, policy_id=policy.policy_id)
            return ""
        _log.info(
            "reconciler.decided", job=job.ref, policy_id=policy.policy_id, decision_id=decision_id
        )
        self._on_commands()
        return decision_id

    async def _facts(self, node_id: str) -> NodeFacts:
        try:
            return await self._nodes.facts(node_id)
        except ConfigError as exc:
            _log.warning("reconciler.no_node_registry", error=str(exc))
            return NodeFacts(known=None)  # planned from the policy alone; noted in the decision
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return NodeFacts(known=None)  # a registry without GetNode: use the record
            raise
