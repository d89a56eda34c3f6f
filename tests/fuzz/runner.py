"""Sending fuzz cases through a real server and judging each reply.

Requests go as raw bytes (no client-side serializer), so bytes no Python message
could produce reach the server. The channel accepts up to 64 MB of metadata,
so an oversized error reply is measured rather than cut off by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import status_pb2

from ppos.controlplane.security.principal import PrincipalKind
from tests.fuzz.catalog import Method
from tests.fuzz.mutate import Mutator
from tests.fuzz.seeds import SeedMaker

BIG = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_metadata_size", BIG),
    ("grpc.absolute_max_metadata_size", BIG),
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
)
MAX_TRAILERS = 8 * 1024
CALL_DEADLINE = 30.0  # a bound on one call (never reached by a healthy server)
STREAM_WINDOW = 0.3  # how long a stream is read before the fuzzer cancels it
REFUSAL_WAIT = 10.0  # how long a stream the caller may not open gets to refuse
REFUSED_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Reply text that names the implementation: a Python class, a traceback, a source
# file, SQL or the database drivers, protobuf's own parse error.
LEAKS = re.compile(
    r"<class |Traceback|\b\w+\.py\b|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|psycopg|"
    r"sqlalchemy|sqlite3|Error parsing message|DecodeError|KeyError|TypeError|ValueError|"
    r"RecursionError|AttributeError",
    re.IGNORECASE,
)
_MESSAGE_CUT = 200


@dataclass(frozen=True)
class Caller:
    kind: PrincipalKind | None  # None: no credential at all
    metadata: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return self.kind.value if self.kind is not None else "none"


@dataclass(frozen=True)
class Case:
    method: Method
    caller: Caller
    body: bytes
    shape: str  # "seed", "mutated" or "raw"
    request_id: str

    @property
    def allowed(self) -> bool:
        """Whether the method lets this caller in at all."""
        allow, kind = self.method.allow, self.caller.kind
        return PrincipalKind.ANONYMOUS in allow or (kind is not None and kind in allow)


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: grpc.StatusCode
    details: str
    trailer_bytes: int
    text: str  # everything the reply said, for the leak check
    cancelled_by_us: bool = False


@dataclass(frozen=True)
class Failure:
    method: str
    code: str
    what: str
    message: str

    def line(self) -> str:
        return f"{self.method} {self.code} [{self.what}] {self.message}"


@dataclass(frozen=True)
class Answer:
    """What is kept of a reply once judged (bodies and reply texts can be megabytes)."""

    method: str
    code: grpc.StatusCode
    details: str
    cancelled_by_us: bool


@dataclass
class Report:
    codes: Counter[str] = field(default_factory=Counter)
    by_caller: Counter[str] = field(default_factory=Counter)
    failures: Counter[Failure] = field(default_factory=Counter)
    examples: dict[Failure, str] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)  # by request id
    requests: int = 0

    def add(self, outcome: Outcome) -> None:
        case = outcome.case
        self.requests += 1
        self.answers[case.request_id] = Answer(
            case.method.name, outcome.code, outcome.details[:_MESSAGE_CUT], outcome.cancelled_by_us
        )
        self.codes[outcome.code.name] += 1
        self.by_caller[f"{case.caller.label}:{outcome.code.name}"] += 1
        failure = judge(outcome)
        if failure is not None:
            self.failures[failure] += 1
            self.examples.setdefault(failure, f"{case.shape} as {case.caller.label}")

    def fail(self, failure: Failure) -> None:
        self.failures[failure] += 1

    def places(self) -> list[tuple[str, int, list[str]]]:
        """Failures grouped by place: code, what and the message with its values blanked
        (quoted text, numbers), most frequent first, with the methods that hit each."""
        grouped: dict[str, tuple[int, Counter[str]]] = {}
        for failure, count in self.failures.items():
            key = f"{failure.code} [{failure.what}] {_blank(failure.message)}"
            total, methods = grouped.get(key, (0, Counter()))
            methods[failure.method] += count
            grouped[key] = (total + count, methods)
        ranked = sorted(grouped.items(), key=lambda item: -item[1][0])
        return [
            (key, total, [m for m, _ in methods.most_common()]) for key, (total, methods) in ranked
        ]

    def summary(self, limit: int = 40) -> str:
        lines = [f"{self.requests} requests; codes: {dict(sorted(self.codes.items()))}"]
        places = self.places()
        if places:
            total = sum(self.failures.values())
            lines.append(f"{len(places)} distinct failure places ({total} replies):")
            for key, count, methods in places[:limit]:
                shown = ", ".join(methods[:8]) + (
                    f" +{len(methods) - 8}" if len(methods) > 8 else ""
                )
                lines.append(f"  {count:>5}x {key}\n         in {len(methods)} methods: {shown}")
            if len(places) > limit:
                lines.append(f"  and {len(places) - limit} more places")
        return "\n".join(lines)


def _blank(message: str) -> str:
    """The shape of a message: quoted values and numbers blanked, cut to 100 characters."""
    message = re.sub(r"'[^']*'?", "'…'", message)
    message = re.sub(r"\"[^\"]*\"?", '"…"', message)
    return re.sub(r"\d+", "N", message)[:100]


def judge(outcome: Outcome) -> Failure | None:
    """What is wrong with one reply (every problem of it in one line), or None."""
    problems = []
    if outcome.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        problems.append("status")
    if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        problems.append("no answer in time")
    if outcome.trailer_bytes > MAX_TRAILERS:
        problems.append(f"trailers over {MAX_TRAILERS} B")
    for match in LEAKS.finditer(outcome.text):
        if match.group(0).encode() not in outcome.case.body:  # not an echo of the input
            problems.append(f"names {match.group(0)!r}")
            break
    method = outcome.case.method
    if not outcome.case.allowed and (outcome.code == grpc.StatusCode.OK or outcome.cancelled_by_us):
        problems.append(f"served a {outcome.case.caller.label} caller")
    if not problems:
        return None
    return Failure(
        method.name, outcome.code.name, ", ".join(problems), outcome.details[:_MESSAGE_CUT]
    )


def _reply_text(details: str, trailers: Sequence[Any]) -> tuple[int, str]:
    size = 0
    parts = [details]
    for key, value in trailers:
        size += len(key) + len(value)
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception as exc:  # a garbled detail is itself a finding
                parts.append(f"<undecodable status details: {exc}>")
            else:
                parts.append(str(status))
        elif isinstance(value, bytes):
            parts.append(value.decode(errors="replace"))
        else:
            parts.append(value)
    return size, "\n".join(parts)


async def send(channel: grpc.aio.Channel, case: Case) -> Outcome:
    metadata = (*case.caller.metadata, ("x-request-id", case.request_id))
    if case.method.streaming:
        return await _send_stream(channel, case, metadata)
    call = channel.unary_unary(case.method.path)(
        case.body, metadata=metadata, timeout=CALL_DEADLINE
    )
    with contextlib.suppress(grpc.aio.AioRpcError):  # the status is read below
        await call
    return await _outcome(case, call)


async def _send_stream(channel: grpc.aio.Channel, case: Case, metadata: Any) -> Outcome:
    call = channel.unary_stream(case.method.path)(
        case.body, metadata=metadata, timeout=CALL_DEADLINE
    )
    loop = asyncio.get_running_loop()
    # A stream the caller may not open must end by itself, with its refusal.
    until = loop.time() + (STREAM_WINDOW if case.allowed else REFUSAL_WAIT)
    try:
        while loop.time() < until:
            message = await asyncio.wait_for(call.read(), until - loop.time())
            if message is grpc.aio.EOF:
                break
    except grpc.aio.AioRpcError:
        pass  # ended by the server: judged below
    except TimeoutError:
        call.cancel()
        return Outcome(case, grpc.StatusCode.CANCELLED, "", 0, "", cancelled_by_us=True)
    if not call.done():
        call.cancel()
        return Outcome(case, grpc.StatusCode.CANCELLED, "", 0, "", cancelled_by_us=True)
    return await _outcome(case, call)


async def _outcome(case: Case, call: Any) -> Outcome:
    code = await call.code()
    details = await call.details() or ""
    trailers = tuple(await call.trailing_metadata() or ())
    size, text = _reply_text(details, trailers)
    return Outcome(case, code, details, size, text)


class CaseMaker:
    """Cases for one caller: seeds, structure-aware mutations and raw bytes."""

    _ids = itertools.count()

    def __init__(self, seeds: SeedMaker, rng: random.Random, tag: str) -> None:
        self._seeds = seeds
        self._rng = rng
        self._mutator = Mutator(rng)
        self._tag = tag

    def case(self, method: Method, caller: Caller) -> Case:
        seed = self._seeds.seed(method.input)
        roll = self._rng.random()
        if roll < 0.1:
            body, shape = seed.SerializeToString(), "seed"
        elif roll < 0.75:
            body, shape = self._mutator.mutate(seed), "mutated"
        else:
            first = next((f.number for f in method.input.fields if f.type == f.TYPE_STRING), None)
            body, shape = self._mutator.raw(seed.SerializeToString(), first), "raw"
        request_id = f"fz-{self._tag}-{next(self._ids)}"
        return Case(method, caller, body, shape, request_id)


async def run_cases(
    channel: grpc.aio.Channel,
    cases: Iterable[Case],
    report: Report,
    concurrency: int,
) -> None:
    """Send `cases` (made as they are taken: a case can be megabytes) `concurrency` at a time."""
    pending = iter(cases)

    async def worker() -> None:
        for case in pending:
            report.add(await send(channel, case))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
