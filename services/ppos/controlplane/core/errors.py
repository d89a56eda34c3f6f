"""The one mapping from domain errors to gRPC status codes with rich details.

Handlers raise these; the error-mapping wrapper turns them into a gRPC status
carrying google.rpc details (ErrorInfo always; BadRequest, ResourceInfo,
PreconditionFailure, RetryInfo or QuotaFailure where they apply), in the
manner of googleapis python-api-core. Anything else a handler raises is a bug
and becomes INTERNAL with no detail beyond the request id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "controlplane.ppos.printprice"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: which field (a path such as `spec.capacity`) and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a handler may raise on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def extra_details(self) -> list[Message]:
        """Details beyond ErrorInfo that this error carries."""
        return []

    def to_status_proto(self) -> status_pb2.Status:
        details: list[Message] = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            ),
            *self.extra_details(),
        ]
        packed = []
        for detail in details:
            item = any_pb2.Any()
            item.Pack(detail)
            packed.append(item)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)

    def to_grpc_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_status_proto())


class InvalidArgument(DomainError):
    """The request is malformed; the field violations say where and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = list(violations)
        if message is None:
            message = "invalid request: " + "; ".join(
                f"{v.field}: {v.description}" for v in self.violations
            )
        super().__init__(message, reason=reason)

    def extra_details(self) -> list[Message]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]

    @classmethod
    def single(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field, description)], reason=reason)


class NotFound(DomainError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_name: str, message: str | None = None) -> None:
        self.resource_type = resource_type
        self.resource_name = resource_name
        super().__init__(
            message or f"{resource_type} {resource_name!r} not found",
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )

    def extra_details(self) -> list[Message]:
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=self.resource_name
            )
        ]


class AlreadyExists(DomainError):
    """The resource (or the idempotency key, with another body) exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"

    def __init__(
        self,
        resource_type: str,
        resource_name: str,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.resource_type = resource_type
        self.resource_name = resource_name
        super().__init__(
            message or f"{resource_type} {resource_name!r} already exists",
            reason=reason,
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )

    def extra_details(self) -> list[Message]:
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=self.resource_name
            )
        ]


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition: its type (e.g. `RESOURCE_VERSION`), subject, why."""

    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the request (do not retry as is)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: Sequence[PreconditionViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.violations = list(violations)
        super().__init__(message, reason=reason, metadata=metadata)

    def extra_details(self) -> list[Message]:
        if not self.violations:
            return []
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]


class StaleResourceVersion(FailedPrecondition):
    """A write named a resource version that is no longer current."""

    def __init__(self, resource_type: str, resource_name: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{resource_type} {resource_name!r} has resource version {actual}, "
            f"not {expected}: read it again and retry",
            [
                PreconditionViolation(
                    "RESOURCE_VERSION",
                    f"{resource_type}/{resource_name}",
                    f"expected {expected}, current {actual}",
                )
            ],
            reason="STALE_RESOURCE_VERSION",
            metadata={"current_resource_version": actual},
        )


class Unauthenticated(DomainError):
    """No valid credential. The message never echoes what was presented."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """A valid credential that may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """Backpressure: a quota or a bounded queue is full. Retry after a while."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self, message: str, *, subject: str, retry_after_seconds: float, reason: str | None = None
    ) -> None:
        self.subject = subject
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason)

    def extra_details(self) -> list[Message]:
        return [
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=self.subject, description=self.message
                    )
                ]
            ),
            _retry_info(self.retry_after_seconds),
        ]


class Unavailable(DomainError):
    """Transient: retry the same call (with backoff)."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self, message: str, *, retry_after_seconds: float = 1.0, reason: str | None = None
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason)

    def extra_details(self) -> list[Message]:
        return [_retry_info(self.retry_after_seconds)]


class Aborted(DomainError):
    """A concurrent change won; retry the whole read-modify-write (after the delay given)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, reason: str | None = None
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason)

    def extra_details(self) -> list[Message]:
        if self.retry_after_seconds is None:
            return []
        return [_retry_info(self.retry_after_seconds)]


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def internal_status(request_id: str) -> grpc.Status:
    """Status for an unexpected failure: no exception text, just the request id."""
    err = DomainError(f"internal error; quote request id {request_id}", reason="INTERNAL")
    err.code = grpc.StatusCode.INTERNAL
    return err.to_grpc_status()


def status_code_name(code: int) -> str:
    return str(code_pb2.Code.Name(code))
