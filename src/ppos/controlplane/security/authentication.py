"""Who is calling: a call's metadata turned into a principal, or a refusal.

The edge (security/edge.py) asks this before it reads anything of the request:
the control token (the break-glass admin) in constant time, a named operator's
credential through a cache over the operators table, a node credential, a
PREFLIGHT_JWT (its request binding and jti are checked by the edge against the
call), or an enrollment token (checked by EnrollNode). Then whether that
principal may call the method, by the contract's access rule and role, and,
once the edge has decoded the request, whether it may set the fields it sets
(the rule's field roles).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol

from ppos.controlplane.core.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from ppos.controlplane.core.ids import request_id
from ppos.controlplane.core.validation import REQUEST_ID
from ppos.controlplane.security.access import FieldRule, MethodRule
from ppos.controlplane.security.claims import (
    NODE_TYP,
    PREFLIGHT_TYP,
    PreflightClaims,
    TokenRejected,
)
from ppos.controlplane.security.control_token import ControlToken
from ppos.controlplane.security.operators import (
    BREAK_GLASS,
    OPERATOR_PREFIX,
    OperatorCredentialCache,
    OperatorIdentity,
    credential_sha256,
)
from ppos.controlplane.security.principal import (
    ANONYMOUS,
    OperatorRole,
    Principal,
    PrincipalKind,
)
from ppos.controlplane.security.tokens import TokenVerifier

CREDENTIAL_KEYS = frozenset({"authorization", "proxy-authorization", "cookie"})
ENROLLMENT_PREFIX = "ppos_enroll_"
NODE_AUDIENCE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
_BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9._~+/=-]+)$")
_MAX_SHARED_PRINCIPALS = 1024


class ReplayLedger(Protocol):
    """Remembers the PREFLIGHT_JWTs presented to mutating methods, for every replica."""

    async def first_use(self, jti: str, expires_at: int) -> bool:
        """True the first time `jti` is presented (and records it); False after."""
        ...


class OperatorLookupPending(Exception):
    """An operator credential whose answer is not cached: the edge looks it up
    (awaiting the database) before it goes on with the call."""

    def __init__(self, digest: str) -> None:
        super().__init__("operator credential not looked up yet")
        self.digest = digest


def _unknown_credential() -> Unauthenticated:
    return Unauthenticated("credential not recognised", reason="UNKNOWN_CREDENTIAL")


def unbound_token() -> Unauthenticated:
    return Unauthenticated(
        "credential rejected: the PREFLIGHT_JWT is not bound to a request",
        reason="TOKEN_UNBOUND",
    )


def token_for_another_request() -> Unauthenticated:
    return Unauthenticated(
        "credential rejected: the PREFLIGHT_JWT was minted for another request",
        reason="TOKEN_REQUEST_MISMATCH",
    )


def pasted_credential() -> InvalidArgument:
    return InvalidArgument.single(
        "request",
        "looks like a credential; nothing was stored",
        reason="CREDENTIAL_IN_REQUEST",
    )


def replayed_token() -> Unauthenticated:
    return Unauthenticated(
        "credential rejected: this PREFLIGHT_JWT was already used", reason="TOKEN_REPLAYED"
    )


class FieldRoleRequired(PermissionDenied):
    """An operator whose role is below that of a field its request sets: refused
    by the edge like a role the method needs (see EdgeAuthenticator.authorize_request)."""

    def __init__(self, rule: MethodRule, field: FieldRule, role: OperatorRole) -> None:
        method, needed = rule.method.rpartition("/")[2], field.min_role.label
        super().__init__(
            f"{method} with {field.field} needs the {needed} role;"
            f" this credential has {role.label}",
            reason="ROLE_REQUIRED",
            metadata={"required_role": needed, "role": role.label, "field": field.field},
        )


def _first(metadata: Sequence[Any], key: str) -> list[str]:
    values = []
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return values


def request_id_from(metadata: Sequence[Any]) -> str:
    """The caller's `x-request-id` when well-formed, else a fresh one."""
    given = _first(metadata, "x-request-id")
    if len(given) == 1 and REQUEST_ID.fullmatch(given[0]):
        return given[0]
    return request_id()


class EdgeAuthenticator:
    """Turns call metadata into a principal, or refuses."""

    def __init__(
        self,
        control_token: ControlToken,
        verifier: TokenVerifier,
        operators: OperatorCredentialCache | None = None,
    ) -> None:
        self._control = control_token
        self._verifier = verifier
        # None where no database is at hand (unit tests, benchmarks of the edge):
        # then only the control token admits an operator.
        self._operators = operators
        # Operators and peers are few and call often: their (immutable) principals
        # are made once and shared by their calls.
        self._principals: dict[tuple[PrincipalKind, str, str, OperatorRole | None], Principal] = {}
        self._break_glass = Principal(PrincipalKind.OPERATOR, BREAK_GLASS, role=OperatorRole.ADMIN)

    def _principal(
        self,
        kind: PrincipalKind,
        name: str,
        acting_for: str = "",
        role: OperatorRole | None = None,
    ) -> Principal:
        key = (kind, name, acting_for, role)
        principal = self._principals.get(key)
        if principal is None:
            if len(self._principals) >= _MAX_SHARED_PRINCIPALS:
                self._principals.clear()
            principal = self._principals[key] = Principal(
                kind, name, acting_for=acting_for, role=role
            )
        return principal

    def _operator(self, identity: OperatorIdentity | None) -> Principal:
        if identity is None:  # unknown, revoked or rotated away: all alike to the caller
            raise _unknown_credential()
        return self._principal(PrincipalKind.OPERATOR, identity.name, role=identity.role)

    async def authenticate_operator(self, digest: str, rule: MethodRule) -> Principal:
        """The rest of authenticate_call for an operator credential not in the
        cache (see OperatorLookupPending): look it up, then authorise."""
        assert self._operators is not None  # only raised when there is a cache
        principal = self._operator(await self._operators.resolve(digest))
        self.authorize(principal, rule)
        return principal

    def authorize(self, principal: Principal, rule: MethodRule) -> None:
        """Refuse a principal kind the method does not admit, or an operator whose
        role is below the method's."""
        if principal.kind not in rule.allow:
            raise PermissionDenied(
                f"a {principal.kind.value} credential may not call {rule.method}",
                reason="PRINCIPAL_NOT_ALLOWED",
                metadata={"principal_kind": principal.kind.value},
            )
        role = principal.role
        if role is not None and role < rule.min_role:
            needed = rule.min_role.label
            raise PermissionDenied(
                f"{rule.method} needs the {needed} role; this credential has {role.label}",
                reason="ROLE_REQUIRED",
                metadata={"required_role": needed, "role": role.label},
            )

    def authorize_request(self, principal: Principal, rule: MethodRule, request: Any) -> None:
        """Refuse an operator whose role is below that of a field `request` (decoded)
        sets; asked only on methods with field roles."""
        role = principal.role
        if role is None:  # not an operator: peers, nodes, anonymous
            return
        for field in rule.field_roles:
            if role < field.min_role and field.is_set(request):
                raise FieldRoleRequired(rule, field, role)

    def authenticate(self, metadata: Sequence[Any], rule: MethodRule) -> Principal:
        return self.authenticate_call(metadata, rule)[0]

    def authenticate_call(
        self, metadata: Sequence[Any], rule: MethodRule
    ) -> tuple[Principal, PreflightClaims | None]:
        """The caller, and the claims of its PREFLIGHT_JWT when it presented one
        (their request binding and jti are checked against the call later).

        Raises OperatorLookupPending for an operator credential whose answer
        is not cached (the caller awaits authenticate_operator)."""
        if rule.open:
            return ANONYMOUS, None
        if not rule.allow:
            raise PermissionDenied(
                f"method {rule.method or 'unknown'} has no access rule", reason="NO_ACCESS_RULE"
            )
        values = _first(metadata, "authorization")
        if not values:
            raise Unauthenticated(
                "missing credential: send 'authorization: Bearer <token>'",
                reason="MISSING_CREDENTIAL",
            )
        if len(values) > 1:
            raise Unauthenticated(
                "more than one authorization header", reason="AMBIGUOUS_CREDENTIAL"
            )
        match = _BEARER.fullmatch(values[0])
        if match is None:
            raise Unauthenticated(
                "malformed authorization header: expected 'Bearer <token>'",
                reason="MALFORMED_CREDENTIAL",
            )
        principal, claims = self._resolve(match.group(1), rule)
        self.authorize(principal, rule)
        return principal, claims

    def _resolve(self, token: str, rule: MethodRule) -> tuple[Principal, PreflightClaims | None]:
        try:
            return self._principal_of(token, rule)
        except TokenRejected as exc:
            raise Unauthenticated(
                f"credential rejected: {exc.detail}", reason=f"TOKEN_{exc.reason.upper()}"
            ) from None

    def _principal_of(
        self, token: str, rule: MethodRule
    ) -> tuple[Principal, PreflightClaims | None]:
        # First a peer hop back to this process, recognised by its exact bytes (the
        # most frequent internal call in the one-port server; see SelfMinted).
        peer = self._verifier.verify_self_minted(token, audience=rule.service, method=rule.method)
        if peer is not None:
            return self._principal(PrincipalKind.PEER, peer.subject, peer.acting_for), peer
        if self._control.matches(token):  # break-glass: an admin, audited as such
            return self._break_glass, None
        if token.startswith(OPERATOR_PREFIX) and self._operators is not None:
            digest = credential_sha256(token)
            known, identity = self._operators.cached(digest)
            if not known:
                raise OperatorLookupPending(digest)
            return self._operator(identity), None
        if token.startswith(ENROLLMENT_PREFIX):
            digest = hashlib.sha256(token.encode()).hexdigest()
            return Principal(
                PrincipalKind.ENROLLING_NODE, "enrollment", enrollment_token_sha256=digest
            ), None
        typ = self._verifier.peek_type(token)
        if typ == PREFLIGHT_TYP:
            claims = self._verifier.verify_signed_preflight(
                token, audience=rule.service, method=rule.method
            )
            return self._principal(PrincipalKind.PEER, claims.subject, claims.acting_for), claims
        if typ == NODE_TYP:
            node = self._verifier.verify_node_credential(token, audience=NODE_AUDIENCE)
            return Principal(
                PrincipalKind.NODE, node.node_id, credential_generation=node.generation
            ), None
        raise _unknown_credential()
