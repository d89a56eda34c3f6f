"""Exceptions of the client library, read back from gRPC statuses and their rich details.

The control plane answers every refusal with a google.rpc.Status in the
`grpc-status-details-bin` trailer: ErrorInfo (a machine-readable reason, and
the request id), and where they apply BadRequest (which fields and why),
PreconditionFailure (what state blocked the call), ResourceInfo (which
resource), QuotaFailure and RetryInfo (when to try again). `from_rpc_error`
turns that into one exception class per status code carrying all of it, so a
caller can branch on the class and show `str(error)` as one clear line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """A request field that was refused, by path (`spec.capacity`), and why."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """A precondition that did not hold: its type (`RESOURCE_VERSION`), subject and why."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """A quota or bounded queue that was full."""

    subject: str
    description: str


@dataclass
class ErrorDetails:
    """Everything the server said about a failure, unpacked."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    precondition_violations: list[PreconditionViolation] = field(default_factory=list)
    quota_violations: list[QuotaViolation] = field(default_factory=list)
    resource_type: str = ""
    resource_name: str = ""
    retry_after: float | None = None

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> ErrorDetails:
        details = cls()
        for item in status.details:
            if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                item.Unpack(info)
                details.reason, details.domain = info.reason, info.domain
                details.metadata = dict(info.metadata)
            elif item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                item.Unpack(bad)
                details.field_violations += [
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                ]
            elif item.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                item.Unpack(failure)
                details.precondition_violations += [
                    PreconditionViolation(v.type, v.subject, v.description)
                    for v in failure.violations
                ]
            elif item.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                item.Unpack(quota)
                details.quota_violations += [
                    QuotaViolation(v.subject, v.description) for v in quota.violations
                ]
            elif item.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                resource = error_details_pb2.ResourceInfo()
                item.Unpack(resource)
                details.resource_type = resource.resource_type
                details.resource_name = resource.resource_name
            elif item.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                item.Unpack(retry)
                delay = retry.retry_delay
                details.retry_after = delay.seconds + delay.nanos / 1e9
        return details


class ClientError(Exception):
    """Base of every error this library raises."""


class ConfigurationError(ClientError):
    """The client is not set up to make the call (no token, unreadable file, bad address)."""


class ControlPlaneError(ClientError):
    """A call ended with a non-OK status; the attributes say what was wrong."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: How kubectl names the class of failure: `Error from server (NotFound)`.
    title = "Unknown"

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: ErrorDetails | None = None,
        method: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details or ErrorDetails()
        self.method = method
        self.attempts = attempts

    @property
    def reason(self) -> str:
        """Machine-readable reason (ErrorInfo.reason), or the status code's name."""
        return self.details.reason or self.code.name

    @property
    def request_id(self) -> str:
        return self.details.metadata.get("request_id", "")

    @property
    def field_violations(self) -> list[FieldViolation]:
        return self.details.field_violations

    @property
    def precondition_violations(self) -> list[PreconditionViolation]:
        return self.details.precondition_violations

    @property
    def retry_after(self) -> float | None:
        return self.details.retry_after

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """`Error from server (NotFound): node 'x' not found [reason ..., request ...]`."""
        extra = []
        if self.details.reason and self.details.reason != self.code.name:
            extra.append(f"reason {self.details.reason}")
        if self.request_id:
            extra.append(f"request {self.request_id}")
        if self.retry_after is not None:
            extra.append(f"retry after {self.retry_after:g}s")
        suffix = f" [{', '.join(extra)}]" if extra else ""
        return f"Error from server ({self.title}): {self.message}{suffix}"


class InvalidArgumentError(ControlPlaneError):
    """The request was malformed; `field_violations` say which fields and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    title = "InvalidArgument"


class OutOfRangeError(InvalidArgumentError):
    code = grpc.StatusCode.OUT_OF_RANGE
    title = "OutOfRange"


class NotFoundError(ControlPlaneError):
    """The named resource does not exist (`resource_type`, `resource_name`)."""

    code = grpc.StatusCode.NOT_FOUND
    title = "NotFound"

    @property
    def resource_type(self) -> str:
        return self.details.resource_type

    @property
    def resource_name(self) -> str:
        return self.details.resource_name


class AlreadyExistsError(ControlPlaneError):
    code = grpc.StatusCode.ALREADY_EXISTS
    title = "AlreadyExists"


class FailedPreconditionError(ControlPlaneError):
    """The system is not in a state that allows the call; do not retry it as is."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    title = "FailedPrecondition"


class StaleResourceVersionError(FailedPreconditionError):
    """A write named a resource version that is no longer current: read again, retry."""

    title = "Conflict"

    @property
    def current_resource_version(self) -> str:
        return self.details.metadata.get("current_resource_version", "")


class AbortedError(ControlPlaneError):
    """A concurrent change won; retry the whole read-modify-write (`retry_after` says
    when). Calls that carry a request id were retried already, up to the limit."""

    code = grpc.StatusCode.ABORTED
    title = "Aborted"


class UnauthenticatedError(ControlPlaneError):
    """No valid credential was presented (the message never echoes it)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    title = "Unauthenticated"


class PermissionDeniedError(ControlPlaneError):
    code = grpc.StatusCode.PERMISSION_DENIED
    title = "PermissionDenied"


class ResourceExhaustedError(ControlPlaneError):
    """Backpressure; `retry_after` says when to try again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    title = "ResourceExhausted"


class UnavailableError(ControlPlaneError):
    """The server could not be reached or asked to be retried, and retries ran out."""

    code = grpc.StatusCode.UNAVAILABLE
    title = "Unavailable"


class DeadlineExceededError(ControlPlaneError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    title = "DeadlineExceeded"


class UnimplementedError(ControlPlaneError):
    """The server does not implement the method (an older server, or not hosted there)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    title = "Unimplemented"


class CancelledError(ControlPlaneError):
    code = grpc.StatusCode.CANCELLED
    title = "Cancelled"


class InternalError(ControlPlaneError):
    """A fault in the server; quote the request id when reporting it."""

    code = grpc.StatusCode.INTERNAL
    title = "InternalError"


_BY_CODE: dict[grpc.StatusCode, type[ControlPlaneError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        OutOfRangeError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        AbortedError,
        UnauthenticatedError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        UnimplementedError,
        CancelledError,
        InternalError,
    )
}
_BY_CODE[grpc.StatusCode.DATA_LOSS] = InternalError


def rich_status(trailing_metadata: Sequence[Any] | None) -> status_pb2.Status | None:
    """The google.rpc.Status carried in the trailers, if any (malformed ones ignored)."""
    for key, value in trailing_metadata or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a garbled trailer is no detail at all
                return None
    return None


def error_class(code: grpc.StatusCode, reason: str = "") -> type[ControlPlaneError]:
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == "STALE_RESOURCE_VERSION":
        return StaleResourceVersionError
    return _BY_CODE.get(code, ControlPlaneError)


def from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Sequence[Any] | None,
    *,
    method: str = "",
    attempts: int = 1,
) -> ControlPlaneError:
    status = rich_status(trailing_metadata)
    details = ErrorDetails.from_status(status) if status is not None else ErrorDetails()
    cls = error_class(code, details.reason)
    return cls(
        message or code.name.lower().replace("_", " "),
        code=code,
        details=details,
        method=method,
        attempts=attempts,
    )


def from_rpc_error(
    error: grpc.RpcError, *, method: str = "", attempts: int = 1
) -> ControlPlaneError:
    """Map a failed call (sync or aio) to the exception for its status code."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = call.details() if hasattr(call, "details") else str(error)
    trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    return from_status(code, message or "", trailers, method=method, attempts=attempts)
