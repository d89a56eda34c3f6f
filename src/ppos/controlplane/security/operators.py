"""Named operators: their credentials, and how the edge finds out who holds one.

An operator credential is `ppos_op_` and 256 random bits (base64url). Only its
SHA-256 is stored: the credential is random and long, so a plain digest is as
hard to reverse as the credential is to guess, and the edge can find it with
one indexed lookup (a slow password hash would cost every uncached call).

The edge must not read the database on every call, so it asks an
OperatorCredentialCache: the answer for a digest, found or not, is kept for a
few seconds (REVOCATION_DELAY), at most MAX_CACHED digests, oldest dropped
first. The database stays the only truth every replica reads; a revoke or
rotate is seen by each replica when its cached answer expires, within
REVOCATION_DELAY, with nothing to tell the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ppos.controlplane.core.context import OperatorRole

OPERATOR_PREFIX = "ppos_op_"
# The actor name of the control token in the audit log; no operator may take it.
BREAK_GLASS = "break-glass"
OPERATOR_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
ROLES = {role.label: role for role in OperatorRole}
# How long a replica may go on honouring a revoked or rotated credential.
REVOCATION_DELAY = 5.0
MAX_CACHED = 4096


def generate_operator_credential() -> str:
    return OPERATOR_PREFIX + secrets.token_urlsafe(32)


def credential_sha256(credential: str) -> str:
    """The stored form of a credential (hex SHA-256)."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()


def operator_name_problem(name: str) -> str | None:
    if not OPERATOR_NAME.fullmatch(name):
        return "1 to 64 lower-case letters, digits, '.', '_', '@' or '-' (a letter or digit first)"
    if name == BREAK_GLASS:
        return f"{BREAK_GLASS!r} names the control token in the audit log"
    return None


@dataclass(frozen=True)
class OperatorIdentity:
    """Who a credential belongs to and what it may do."""

    name: str
    role: OperatorRole


class OperatorLookup(Protocol):
    """Finds the live (not revoked) operator whose credential has this digest."""

    async def operator_by_credential(self, credential_sha256: str) -> OperatorIdentity | None: ...


class OperatorCredentialCache:
    """The edge's view of operator credentials: a bounded cache with a short TTL
    in front of an OperatorLookup, with one lookup in flight per digest."""

    def __init__(
        self,
        lookup: OperatorLookup,
        *,
        ttl: float = REVOCATION_DELAY,
        max_entries: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, OperatorIdentity | None]] = {}
        self._pending: dict[str, asyncio.Future[OperatorIdentity | None]] = {}

    def cached(self, digest: str) -> tuple[bool, OperatorIdentity | None]:
        """(True, the answer) when a fresh one is cached, else (False, None)."""
        entry = self._entries.get(digest)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    async def resolve(self, digest: str) -> OperatorIdentity | None:
        """The answer from the cache, or from the lookup (then cached)."""
        known, identity = self.cached(digest)
        if known:
            return identity
        pending = self._pending.get(digest)
        if pending is None:  # else another call is already asking about this digest
            pending = self._pending[digest] = asyncio.ensure_future(self._fetch(digest))
        # Shielded: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(pending)

    async def _fetch(self, digest: str) -> OperatorIdentity | None:
        try:
            identity = await self._lookup.operator_by_credential(digest)
        finally:
            self._pending.pop(digest, None)
        self._remember(digest, identity)
        return identity

    def _remember(self, digest: str, identity: OperatorIdentity | None) -> None:
        self._entries.pop(digest, None)
        if len(self._entries) >= self._max:  # oldest first: dicts keep insertion order
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = (self._clock() + self._ttl, identity)
