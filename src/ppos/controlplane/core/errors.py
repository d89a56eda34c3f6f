"""The one mapping from domain errors to gRPC status codes with rich details.

Handlers raise these; the error-mapping wrapper turns them into a gRPC status
carrying google.rpc details (ErrorInfo always; BadRequest, ResourceInfo,
PreconditionFailure, RetryInfo or QuotaFailure where they apply), in the
manner of googleapis python-api-core. Anything else a handler raises is a bug
and becomes INTERNAL with no detail beyond the request id.

Every reply is bounded, whatever the request held, so that a default gRPC
client (which reads at most 8 KiB of trailing metadata, and may refuse more)
sees the real status: a text echoed back is cut to MAX_TEXT_CHARS, an id or
name to MAX_ID_CHARS (the longest id the API takes), each showing the length
it had ("...(1,048,576 chars)"); the message to MAX_MESSAGE_CHARS and to
MAX_MESSAGE_WIRE_BYTES as gRPC percent-encodes it; a list of violations to
MAX_SHOWN_VIOLATIONS entries plus one "and N more"; ErrorInfo metadata to
MAX_METADATA_ENTRIES; and the serialized google.rpc.Status (sent base64 in
`grpc-status-details-bin`) to MAX_DETAILS_BYTES, showing fewer violations,
then only ErrorInfo, until it fits. Message plus details stay under 7 KiB.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ppos.controlplane.core.reply_bounds import (
    MAX_DETAILS_BYTES,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_SHOWN_VIOLATIONS,
    MAX_TEXT_CHARS,
    bounded_detail,
    bounded_message,
    bounded_metadata,
    clip,
)

ERROR_DOMAIN = "controlplane.ppos.printprice"
# Where gRPC carries the serialized google.rpc.Status (grpc_status's key).
GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"


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

    def bounded_details(self, shown: int) -> list[Message]:
        """`extra_details` with texts cut and lists at most `shown` long, each
        followed by one "and N more" (see the module)."""
        return [bounded_detail(detail, shown) for detail in self.extra_details()]

    def to_status_proto(self) -> status_pb2.Status:
        """The status with its details, bounded (see the module)."""
        code, message = self.code.value[0], bounded_message(self.message)
        info = error_details_pb2.ErrorInfo(
            reason=clip(self.reason, MAX_ID_CHARS), domain=ERROR_DOMAIN
        )
        entries = info.metadata
        for key, value in bounded_metadata(self.metadata).items():
            entries[key] = value
        for shown in (MAX_SHOWN_VIOLATIONS, 10, 5, 1, 0):
            status = _status(code, message, [info, *self.bounded_details(shown)])
            if status.ByteSize() <= MAX_DETAILS_BYTES:
                return status
        status = _status(code, message, [info])
        if status.ByteSize() <= MAX_DETAILS_BYTES:
            return status
        request_id = self.metadata.get("request_id", "")
        minimal = error_details_pb2.ErrorInfo(reason=info.reason, domain=ERROR_DOMAIN)
        if request_id:
            minimal.metadata["request_id"] = clip(request_id, MAX_ID_CHARS)
        return _status(code, message, [minimal])

    def to_grpc_status(self) -> grpc.Status:
        status = self.to_status_proto()
        return _GrpcStatus(
            self.code, status.message, ((GRPC_DETAILS_METADATA_KEY, status.SerializeToString()),)
        )


class _GrpcStatus(namedtuple("_GrpcStatus", ("code", "details", "trailing_metadata")), grpc.Status):
    """What grpc_status.rpc_status.to_status makes, from the code we already hold."""


# Any.type_url by message type: Any.Pack works it out (in Python) on every call.
_TYPE_URLS: dict[type[Message], str] = {}


def _type_url(detail: Message) -> str:
    url = _TYPE_URLS.get(type(detail))
    if url is None:
        url = _TYPE_URLS[type(detail)] = "type.googleapis.com/" + detail.DESCRIPTOR.full_name
    return url


def _status(code: int, message: str, details: Iterable[Message]) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    packed = status.details
    for detail in details:
        packed.add(type_url=_type_url(detail), value=detail.SerializeToString())
    return status


def _summary(violations: Sequence[FieldViolation]) -> str:
    """The message of an INVALID_ARGUMENT: as many violations as fit, then how
    many more there are."""
    parts: list[str] = []
    used = len("invalid request: ")
    for v in violations[:MAX_SHOWN_VIOLATIONS]:
        part = f"{clip(v.field, MAX_ID_CHARS)}: {clip(v.description, MAX_TEXT_CHARS)}"
        if parts and used + len(part) + 2 > MAX_MESSAGE_CHARS - 40:  # room for the count
            break
        parts.append(part)
        used += len(part) + 2
    message = "invalid request: " + "; ".join(parts)
    if len(violations) > len(parts):
        message += f"; and {len(violations) - len(parts):,} more"
    return message


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
            message = _summary(self.violations)
        super().__init__(message, reason=reason)

    def extra_details(self) -> list[Message]:
        return self.bounded_details(MAX_SHOWN_VIOLATIONS)

    def bounded_details(self, shown: int) -> list[Message]:
        # Built from the first `shown` only: a request with 100,000 bad values
        # costs no more to answer than one with 21.
        bad = error_details_pb2.BadRequest()
        for v in self.violations[:shown]:
            bad.field_violations.add(
                field=clip(v.field, MAX_ID_CHARS), description=clip(v.description, MAX_TEXT_CHARS)
            )
        if len(self.violations) > shown:
            bad.field_violations.add(description=f"and {len(self.violations) - shown:,} more")
        return [bad]

    @classmethod
    def single(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field, description)], reason=reason)


class _ResourceError(DomainError):
    """An error about one named resource (ResourceInfo in its details)."""

    state = ""  # what the message says of the resource

    def __init__(
        self,
        resource_type: str,
        resource_name: str,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.resource_type = resource_type
        self.resource_name = resource_name = clip(resource_name, MAX_ID_CHARS)
        super().__init__(
            message or f"{resource_type} {resource_name!r} {self.state}",
            reason=reason,
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )

    def extra_details(self) -> list[Message]:
        # Built bounded (the name was cut when the error was made), so it is its
        # own bounded form: no copy to cut.
        return [
            error_details_pb2.ResourceInfo(
                resource_type=clip(self.resource_type, MAX_ID_CHARS),
                resource_name=self.resource_name,
            )
        ]

    def bounded_details(self, shown: int) -> list[Message]:
        return self.extra_details()

    def to_grpc_status(self) -> grpc.Status:
        """DomainError's status, with what every call about this resource shares
        (message, ErrorInfo but the request id, ResourceInfo) encoded once and
        kept framed around a request id of each length: per call, only the
        request id is put in its place. A NOT_FOUND lookup is frequent, and
        building its Status anew cost a loaded server a tenth of the call
        (measured in bench/bench_read_path)."""
        metadata = self.metadata
        request_id = metadata.get("request_id")
        if request_id is None or len(metadata) > MAX_METADATA_ENTRIES:
            return super().to_grpc_status()
        items = tuple(metadata.items())
        # The edge adds the request id last: the rest as it is, without a search.
        shared = items[:-1] if items[-1][0] == "request_id" else _without_request_id(items)
        value = clip(request_id, MAX_ID_CHARS).encode("utf-8")
        key = (type(self), self.reason, self.message, self.resource_type, len(value), *shared)
        framed = _FRAMED.get(key)
        if framed is None:
            framed = _FRAMED.add(key, self._framed(dict(shared), len(value)) or ())
        if not framed:  # too large to share: cut as DomainError cuts it
            return super().to_grpc_status()
        message, before, after = framed
        return _GrpcStatus(
            self.code, message, ((GRPC_DETAILS_METADATA_KEY, before + value + after),)
        )

    def _framed(self, shared: dict[str, str], size: int) -> tuple[str, bytes, bytes] | None:
        """(message, the encoded Status up to a request id of `size` bytes, the
        rest after it); None when the status with the longest request id would
        not fit whole (DomainError then cuts it)."""
        parts = self._shared_parts(shared)
        if parts is None:
            return None
        message, head, info, tail = parts
        # Protobuf merges concatenated encodings: the ErrorInfo gains the map
        # entry, the Status's details list their elements in order. The request
        # id is the last bytes of the ErrorInfo, which is the last of its Any.
        info += _field(3, _REQUEST_ID_KEY + _field(2, bytes(size)))
        whole = head + _field(3, _ERROR_INFO_URL + _field(2, info))
        return message, whole[: len(whole) - size], tail

    def _shared_parts(self, shared: dict[str, str]) -> tuple[str, bytes, bytes, bytes] | None:
        """(message, the Status's code and message, ErrorInfo without the request
        id, the other details), each encoded; None when the status with the
        longest request id would not fit whole (DomainError then cuts it)."""
        own, self.metadata = self.metadata, shared
        try:
            status = self.to_status_proto()
        finally:
            self.metadata = own
        if status.ByteSize() + _REQUEST_ID_ROOM > MAX_DETAILS_BYTES:
            return None
        if len(status.details) != 1 + len(self.extra_details()):
            return None
        head = status_pb2.Status(code=status.code, message=status.message).SerializeToString()
        tail = status_pb2.Status(details=status.details[1:]).SerializeToString()
        return status.message, head, status.details[0].value, tail


def _without_request_id(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(item for item in items if item[0] != "request_id")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2) holding `payload`."""
    size, length = len(payload), bytearray()
    while size > 0x7F:  # base-128 varint, least significant group first
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes((number << 3 | 2,)) + length + payload


class _Kept:
    """Values by key, at most `size`, the oldest dropped first (shared by threads)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: dict[object, object] = {}
        self._lock = threading.Lock()

    def get(self, key: object) -> Any:
        return self._values.get(key)

    def add(self, key: object, value: Any) -> Any:
        with self._lock:
            if len(self._values) >= self._size:
                del self._values[next(iter(self._values))]
            self._values[key] = value
        return value


# A resource error's Status framed around its request id, by error type, reason,
# message, the request id's length and the other metadata.
_FRAMED = _Kept(4096)
# Any.type_url (field 1) of an ErrorInfo, and a map entry's key (field 1) "request_id".
_ERROR_INFO_URL = _field(1, _type_url(error_details_pb2.ErrorInfo()).encode())
_REQUEST_ID_KEY = _field(1, b"request_id")
# What a request id's ErrorInfo entry adds at most: key, value of MAX_ID_CHARS
# (4 bytes of UTF-8 each at most), framing, and the details' grown length prefixes.
_REQUEST_ID_ROOM = 4 * MAX_ID_CHARS + 32


class NotFound(_ResourceError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"
    state = "not found"


class AlreadyExists(_ResourceError):
    """The resource (or the idempotency key, with another body) exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"
    state = "already exists"


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
        resource_name, expected = clip(resource_name, MAX_ID_CHARS), clip(expected, MAX_ID_CHARS)
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
