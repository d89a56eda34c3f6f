"""Backfills: a policy enabled or changed evaluates the jobs synced before it.

The reconciler reads synced jobs once, in order, so a policy enabled later
would never see the jobs it has already passed. Enabling a policy (or changing
an enabled one) records a backfill: the jobs synced in the last WINDOW sync
sequences up to the reconciler's position at that moment. The reconciler works
through it a page per round once it has caught up with new jobs, deciding each
job the policy applies to, at most LIMIT of them per enable; a backfill that
reaches the limit stops there and says so in its audit entry. Decisions keep
their unique key (region, job, revision, policy), so a job already decided by
the policy is not acted on again, whatever restarts or replays happen.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.common import SERVICE
from ppos.controlplane.services.governance.models import PolicyBackfillRow, PolicyRow
from ppos.controlplane.services.governance.policy.cursor import read_cursor
from ppos.controlplane.storage import audit

# Sync sequences looked back from the reconciler's position (also the dry run's window).
WINDOW = 10_000
# Jobs one enable (or change) of a policy newly decides at most.
LIMIT = 1_000


@dataclass(frozen=True)
class Backfill:
    """A backfill to work on: the policy (at its generation) and where it stands."""

    policy_id: str
    generation: int
    after_sequence: int
    up_to_sequence: int
    evaluated: int


def window(cursor: int) -> tuple[int, int]:
    """The (after, up_to] sync sequences a policy enabled now would evaluate."""
    return max(0, cursor - WINDOW), cursor


def start(session: Session, policy: PolicyRow) -> None:
    """In the policy's write: an enabled policy backfills; a disabled one stops doing so."""
    existing = session.get(PolicyBackfillRow, policy.policy_id, with_for_update=True)
    after, up_to = window(read_cursor(session))
    if not policy.enabled or up_to <= after:  # disabled, or nothing synced before
        if existing is not None:
            session.delete(existing)
        return
    now = utcnow()
    if existing is None:
        existing = PolicyBackfillRow(policy_id=policy.policy_id, created_at=now)
        session.add(existing)
    existing.generation = policy.generation
    existing.after_sequence = after
    existing.up_to_sequence = up_to
    existing.evaluated = 0
    existing.updated_at = now


def stop(session: Session, policy_id: str) -> None:
    """In a policy's removal."""
    existing = session.get(PolicyBackfillRow, policy_id, with_for_update=True)
    if existing is not None:
        session.delete(existing)


def next_due(session: Session) -> Backfill | None:
    """The backfill least recently worked on, or None."""
    row = session.scalars(
        select(PolicyBackfillRow).order_by(
            PolicyBackfillRow.updated_at, PolicyBackfillRow.policy_id
        )
    ).first()
    if row is None:
        return None
    return Backfill(
        row.policy_id, row.generation, row.after_sequence, row.up_to_sequence, row.evaluated
    )


def advance(session: Session, done: Backfill, *, finished: bool) -> None:
    """Save progress (only if the policy was not changed meanwhile); audit the end."""
    row = session.get(PolicyBackfillRow, done.policy_id, with_for_update=True)
    if row is None or row.generation != done.generation:
        return  # removed or restarted by a newer change of the policy
    if not finished:
        row.after_sequence = done.after_sequence
        row.evaluated = done.evaluated
        row.updated_at = utcnow()
        return
    session.delete(row)
    capped = done.evaluated >= LIMIT and done.after_sequence < done.up_to_sequence
    audit.record(
        session,
        service=SERVICE,
        resource_kind="policy",
        resource_id=done.policy_id,
        before=None,
        after={
            "backfill": {
                "generation": done.generation,
                "jobs_decided": done.evaluated,
                "through_sync_sequence": done.after_sequence if capped else done.up_to_sequence,
                "capped": capped,
                "note": (
                    f"stopped at the limit of {LIMIT} jobs; jobs synced after sequence "
                    f"{done.after_sequence} up to {done.up_to_sequence} were not evaluated"
                    if capped
                    else "every job synced before the policy was enabled was evaluated"
                ),
            }
        },
        method="policy:backfill",
    )
