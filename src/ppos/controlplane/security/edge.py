"""The edge: authenticate every call, authorise it against the contract, forget
the credential, decode the request, and map errors to rich statuses.

It acts as the server interceptor of every method the server hosts (ours,
health and reflection alike), applied once per method at registration (see
EdgeGuard) rather than through grpc.aio's interceptor chain, which builds a
handler per call.

Order per call: resolve the method's access rule; resolve the principal from
`authorization` (control token in constant time, or a named operator's
credential, or a node credential, or a PREFLIGHT_JWT, or an enrollment token);
refuse with UNAUTHENTICATED or PERMISSION_DENIED (a kind the method does not
admit, an operator's role below the method's `min_role`) before anything
reads the request (an operator credential not in the cache is looked up
first, see security/operators.py); for a PREFLIGHT_JWT, check that it was
minted for this request (its `rqh` is the SHA-256 of the bytes received) and,
on a mutating method, that its `jti` is used for the first time by any
replica (a ReplayLedger); only then check the request's size against the
method's limit and decode it (grpc.aio hands the edge bytes; see
core/handlers.py), refusing a body too large or undecodable
with INVALID_ARGUMENT; on a method whose rule has field roles, refuse an
operator whose role is below that of a field the decoded request sets
(PERMISSION_DENIED, as for the method's role; only those methods are wrapped
in the check, chosen at registration, so the others pay nothing for it); run
the handler with the principal and request id bound in contextvars and a
context whose metadata no longer holds the credential.

A refusal or failure is answered by setting the call's status and returning,
not by `context.abort()` (see core/handlers.end_with): abort left a cycle
holding each refused request's bytes until the cyclic collector ran, and 200
refused 8 MB bodies grew the server by 1.8 GB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog

from ppos.controlplane.core.errors import (
    DomainError,
    Unavailable,
    internal_status,
)
from ppos.controlplane.core.handlers import CallWrapper, end_with, wrap_handler
from ppos.controlplane.core.logging import bind_call_fields
from ppos.controlplane.core.wrapping import WrappingServer
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.authentication import (
    CREDENTIAL_KEYS,
    EdgeAuthenticator,
    FieldRoleRequired,
    OperatorLookupPending,
    ReplayLedger,
    pasted_credential,
    replayed_token,
    request_id_from,
    token_for_another_request,
    unbound_token,
)
from ppos.controlplane.security.claims import (
    PreflightClaims,
    request_sha256,
)
from ppos.controlplane.security.credential_scan import CredentialScanner
from ppos.controlplane.security.principal import (
    Principal,
    current_method,
    current_principal,
    current_request_id,
)

_log = structlog.get_logger("ppos.edge")
AuthFailureHook = Callable[[str, str], None]  # (method, reason)
# The loggers structlog filters debug lines out of (core/logging configures one).
_ABOVE_DEBUG = frozenset(
    structlog.make_filtering_bound_logger(level)
    for level in (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
)


def _debug_kept() -> bool:
    """Whether a debug line would be written, asked without assembling a logger."""
    return structlog.get_config()["wrapper_class"] not in _ABOVE_DEBUG


class _ScrubbedContext:
    """The servicer context as handlers see it: no credential in the metadata."""

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        self._context = context

    def invocation_metadata(self) -> tuple[Any, ...]:
        return tuple(
            item
            for item in self._context.invocation_metadata() or ()
            if item[0] not in CREDENTIAL_KEYS
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Guard(CallWrapper):
    """The edge around one method, built once at registration and shared by its calls.

    Per call: authenticate from the call's metadata against the method's rule;
    refuse before the request is decoded and the handler runs, or decode the
    request (as the handler is called) and run the handler with the principal
    and request id bound in contextvars and a context whose metadata holds no
    credential; map whatever it raises to a status.
    """

    __slots__ = ("_edge", "_method", "_rule")

    def __init__(self, edge: EdgeGuard, rule: MethodRule, method: str) -> None:
        self._edge = edge
        self._rule = rule
        self._method = method

    def _admit(
        self, metadata: Sequence[Any]
    ) -> tuple[str, DomainError | OperatorLookupPending | None, PreflightClaims | None]:
        """Authenticate the call and bind who it is for: its request id, why it is
        refused (None when it is not; OperatorLookupPending when an operator
        credential must be looked up first, see _admit_operator), and its
        PREFLIGHT_JWT's claims if any."""
        request_id = request_id_from(metadata)
        try:
            principal, claims = self._edge.authenticator.authenticate_call(metadata, self._rule)
        except (DomainError, OperatorLookupPending) as exc:
            # Without its traceback: its frames lead back to the caller's, which
            # holds the request and this error, a cycle only the collector breaks.
            return request_id, exc.with_traceback(None), None
        self._enter(principal, request_id)
        return request_id, None, claims

    async def _admit_operator(
        self, pending: OperatorLookupPending, request_id: str
    ) -> DomainError | None:
        """_admit's end for an operator credential not cached: why the call is
        refused, or None (and the operator bound to the call)."""
        try:
            principal = await self._edge.authenticator.authenticate_operator(
                pending.digest, self._rule
            )
        except DomainError as exc:
            return exc.with_traceback(None)
        except Exception:  # noqa: BLE001 - the call is answered, the failure logged
            _log.exception("auth.operator_lookup_failed", request_id=request_id)
            return Unavailable(
                "the credential cannot be checked now; retry", reason="CREDENTIAL_LOOKUP_FAILED"
            )
        self._enter(principal, request_id)
        return None

    async def _checked(self, context: Any, request: Any) -> tuple[str, DomainError | None]:
        """Every check before the request is read, in order: who is calling, a
        credential pasted where it does not belong (not on health and reflection,
        open to anyone), a PREFLIGHT_JWT's request binding and single use. The
        call's request id, and why it is refused (None when it is not)."""
        # Once: grpc.aio builds a new tuple of the call's metadata on every ask.
        metadata = context.invocation_metadata() or ()
        request_id, refused, claims = self._admit(metadata)
        if isinstance(refused, OperatorLookupPending):
            refused = await self._admit_operator(refused, request_id)
        if refused is None and not self._rule.open:
            refused = self._pasted(metadata, request)
        if claims is not None and refused is None:
            refused = await self._bound(claims, request)
        return request_id, refused

    def _pasted(self, metadata: Sequence[Any], request: Any) -> DomainError | None:
        """A credential in the request or in a header other than `authorization`
        (see credential_scan): refused before anything reads, stores or echoes it."""
        scanner = self._edge.scanner
        if scanner is None:
            return None
        if isinstance(request, bytes) and scanner.holds_credential(request):
            return pasted_credential()
        for key, value in metadata:
            if key not in CREDENTIAL_KEYS and scanner.value_holds_credential(value):
                return pasted_credential()
        return None

    async def _bound(self, claims: PreflightClaims, request: Any) -> DomainError | None:
        """Why a PREFLIGHT_JWT may not be used for this call, or None: it must be
        minted for these request bytes, and on a mutating method used only once."""
        if isinstance(request, bytes):  # one request message (a stream binds to none)
            if not claims.request_sha256:
                return unbound_token()
            if request_sha256(request) != claims.request_sha256:
                return token_for_another_request()
        ledger = self._edge.ledger
        if (
            self._rule.mutating
            and ledger is not None
            and not await ledger.first_use(claims.jti, claims.expires_at)
        ):
            return replayed_token()
        return None

    def _refuse(self, context: Any, exc: DomainError, request_id: str) -> None:
        """Answer the call with `exc`'s status; the request is not decoded, the
        handler never runs."""
        exc.metadata.setdefault("request_id", request_id)
        _log.info(
            "auth.refused",
            method=self._method,
            request_id=request_id,
            code=exc.code.name,
            reason=exc.reason,
        )
        if self._edge.on_auth_failure is not None:
            self._edge.on_auth_failure(self._method, exc.reason)
        end_with(context, exc.to_grpc_status())

    def _enter(self, principal: Principal, request_id: str) -> None:
        """Bind the call's principal, request id and method for the handler and the logs.

        grpc.aio runs every call in a task of its own, which starts from a copy
        of the server's context: what is set here is seen by this call only and
        goes with its task, so there is nothing to reset.
        """
        current_principal.set(principal)
        current_request_id.set(request_id)
        current_method.set(self._method)
        bind_call_fields(
            {"request_id": request_id, "method": self._method, "caller": principal.display}
        )

    def _fail(self, context: Any, exc: BaseException, request_id: str) -> None:
        """Answer the call with the status `exc` maps to (a bug: INTERNAL)."""
        if isinstance(exc, FieldRoleRequired):  # raised as the request was decoded
            self._refuse(context, exc, request_id)
            return
        if isinstance(exc, NotImplementedError):
            context.set_code(grpc.StatusCode.UNIMPLEMENTED)
            context.set_details(f"{self._method} is not implemented by this server")
            return
        if isinstance(exc, DomainError):
            exc.metadata.setdefault("request_id", request_id)
            status = exc.to_grpc_status()
            # A lookup that finds nothing is an answer, not an event: at debug (an
            # info line cost a NOT_FOUND GetNode a seventh of its time), and only
            # when debug lines are kept (structlog assembles a logger per line).
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                _log.info(
                    "rpc.refused", code=exc.code.name, reason=exc.reason, detail=status.details
                )
            elif _debug_kept():
                _log.debug(
                    "rpc.refused", code=exc.code.name, reason=exc.reason, detail=status.details
                )
        else:
            _log.error("rpc.failed", exc_info=exc)
            status = internal_status(request_id)
        end_with(context, status)

    def wrap_unary(
        self, behaviour: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        checked, refuse, fail = self._checked, self._refuse, self._fail

        async def guarded(request: Any, context: Any) -> Any:
            request_id, refused = await checked(context, request)
            if refused is not None:
                refuse(context, refused, request_id)
                return None
            try:  # `behaviour` decodes the request as it is called
                return await behaviour(request, _ScrubbedContext(context))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, logged in _fail
                fail(context, exc, request_id)
                return None

        return guarded

    async def around_stream(
        self, invoke: Callable[[Any], AsyncIterator[Any]], context: Any, request: Any = None
    ) -> AsyncIterator[Any]:
        request_id, refused = await self._checked(context, request)
        if refused is not None:
            self._refuse(context, refused, request_id)
            return
        try:  # `invoke` decodes the request as it calls the behaviour
            async for item in invoke(_ScrubbedContext(context)):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, logged in _fail
            self._fail(context, exc, request_id)


class EdgeGuard:
    """The edge, applied to every handler the server hosts when it is registered.

    It does what a grpc.aio ServerInterceptor would, but wraps each method once
    instead of running an interceptor chain and building a handler per call:
    measured on this machine, an empty aio ServerInterceptor alone cost about a
    quarter of the throughput of a two-hop call.
    """

    def __init__(
        self,
        access: AccessTable,
        authenticator: EdgeAuthenticator,
        on_auth_failure: AuthFailureHook | None = None,
        ledger: ReplayLedger | None = None,
        scanner: CredentialScanner | None = None,
    ) -> None:
        self.access = access
        self.authenticator = authenticator
        self.on_auth_failure = on_auth_failure
        # None only where nothing is shared (unit tests, benchmarks of the edge).
        self.ledger = ledger
        self.scanner = scanner

    def guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` behind the edge: open methods too, whose requests are decoded
        here like any other (an undecodable body is INVALID_ARGUMENT, never UNKNOWN)."""
        rule = self.access.rule(method)
        return wrap_handler(
            handler,
            _Guard(self, rule, method),
            max_request_bytes=rule.max_request_bytes,
            check_request=self._field_check(rule) if rule.field_roles else None,
        )

    def _field_check(self, rule: MethodRule) -> Callable[[Any], None]:
        """The rule's field roles asked of each decoded request, for the principal
        the guard bound to the call (run before the handler; see wrap_handler)."""
        authorize_request = self.authenticator.authorize_request

        def check(request: Any) -> None:
            authorize_request(current_principal.get(), rule, request)

        return check


class GuardedServer(WrappingServer):
    """What service modules register on: every handler passes through the edge."""

    def __init__(self, server: grpc.aio.Server, edge: EdgeGuard) -> None:
        super().__init__(server, edge.guard)
