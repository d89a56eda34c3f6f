"""Faults the simulated registry injects on request: flags and/or a JSON file.

Call faults count down over the next page calls (ListJobChanges and
StreamJobChanges), in this order of precedence:

- `unavailable`: answer UNAVAILABLE;
- `slow`: answer after `slow_seconds` (a caller's deadline may expire first);
- `drop`: cut the TCP connection in the middle of the page (needs the
  simulator's `--fault-proxy`, which puts a byte-counting proxy in front).

Record faults apply whenever a feed position is served (so a page served
again after a dropped call is corrupted the same way again):

- `wrong_digest_at`: the record's SHA-256 is wrong (one byte flipped);
- `malformed_at`: `{position: kind}`, kinds in MALFORMED_KINDS: `garbage` and
  `bad_utf8` are not a parseable JobRecord, the others are envelopes that
  fail verification;
- `repeat_at`: the record is sent twice in a row;
- `conflict_at`: after the record, a different payload (with its own correct
  digest) under the same job id and revision;
- `changed_at`: the record is served with that different payload instead (a
  registry whose history changed: what `VerifyMirror(against_source)` finds);
- `omit_at`: the record is not served at all (gone from the registry);
- `reorder`: records of each page are shuffled (seeded by `seed`);
- `overlap`: each page starts again with the last record of the page before.

The file (`--faults FILE`) holds the same names, e.g.
`{"unavailable": 2, "wrong_digest_at": [5, 9], "malformed_at": {"7": "garbage"}}`;
it is read again whenever it changes, which re-arms the call counters.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.feed import RECORDS_FIELD, Entry, frame, unframe
from ppos.preflightsim.logs import get_logger

_log = get_logger("ppos.preflightsim.faults")
MALFORMED_KINDS = (
    "garbage",
    "bad_utf8",
    "no_job_id",
    "bad_revision",
    "short_digest",
    "wrong_region",
    "no_cursor",
)


class FaultConfigError(ValueError):
    """A fault specification that cannot be used."""


@dataclass(frozen=True)
class FaultPlan:
    unavailable: int = 0
    slow: int = 0
    slow_seconds: float = 2.0
    drop: int = 0
    drop_after_bytes: int = 64
    wrong_digest_at: frozenset[int] = frozenset()
    malformed_at: dict[int, str] = field(default_factory=dict)
    repeat_at: frozenset[int] = frozenset()
    conflict_at: frozenset[int] = frozenset()
    changed_at: frozenset[int] = frozenset()
    omit_at: frozenset[int] = frozenset()
    reorder: bool = False
    overlap: bool = False
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> FaultPlan:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultConfigError(f"unknown faults {unknown}; known: {sorted(known)}")
        try:
            plan = cls(
                unavailable=int(data.get("unavailable", 0)),
                slow=int(data.get("slow", 0)),
                slow_seconds=float(data.get("slow_seconds", 2.0)),
                drop=int(data.get("drop", 0)),
                drop_after_bytes=int(data.get("drop_after_bytes", 64)),
                wrong_digest_at=frozenset(int(p) for p in data.get("wrong_digest_at", ())),
                malformed_at={
                    int(p): str(k) for p, k in dict(data.get("malformed_at", {})).items()
                },
                repeat_at=frozenset(int(p) for p in data.get("repeat_at", ())),
                conflict_at=frozenset(int(p) for p in data.get("conflict_at", ())),
                changed_at=frozenset(int(p) for p in data.get("changed_at", ())),
                omit_at=frozenset(int(p) for p in data.get("omit_at", ())),
                reorder=bool(data.get("reorder", False)),
                overlap=bool(data.get("overlap", False)),
                seed=int(data.get("seed", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise FaultConfigError(f"bad fault value: {exc}") from None
        plan.check()
        return plan

    def check(self) -> None:
        bad = sorted({k for k in self.malformed_at.values() if k not in MALFORMED_KINDS})
        if bad:
            raise FaultConfigError(f"unknown malformed kinds {bad}; known: {MALFORMED_KINDS}")
        if min((self.unavailable, self.slow, self.drop, self.drop_after_bytes)) < 0:
            raise FaultConfigError("fault counts must not be negative")
        if self.slow_seconds < 0:
            raise FaultConfigError("slow_seconds must not be negative")

    @property
    def corrupts_records(self) -> bool:
        return bool(
            self.wrong_digest_at
            or self.malformed_at
            or self.repeat_at
            or self.conflict_at
            or self.changed_at
            or self.omit_at
            or self.reorder
            or self.overlap
        )


def parse_positions(text: str) -> frozenset[int]:
    try:
        return frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise FaultConfigError(f"{text!r} is not a comma-separated list of positions") from None


def parse_malformed(text: str) -> dict[int, str]:
    """`7:garbage,12:no_job_id` (kind defaults to garbage)."""
    out: dict[int, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        position, _, kind = item.partition(":")
        try:
            out[int(position)] = kind.strip() or "garbage"
        except ValueError:
            raise FaultConfigError(f"{item!r} is not POSITION[:KIND]") from None
    return out


@dataclass
class CallFaults:
    """What to do to one page call."""

    unavailable: bool = False
    slow_seconds: float = 0.0
    drop_after_bytes: int | None = None


class FaultState:
    """The plan in force, its call counters, and the file it is re-read from."""

    def __init__(self, plan: FaultPlan, path: Path | None = None) -> None:
        self._base = plan
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.plan = plan
        self._left = {"unavailable": plan.unavailable, "slow": plan.slow, "drop": plan.drop}
        self.injected: dict[str, int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the fault file when it changed (its faults override the flags)."""
        if self._path is None:
            return
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self._path.read_text() or "{}")
            plan = replace(self._base, **_plan_fields(FaultPlan.from_mapping(data), data))
        except (ValueError, FaultConfigError) as exc:
            # Half-written or wrong: keep the plan in force, try again next call.
            _log.warning("preflightsim.faults_unreadable", path=str(self._path), error=str(exc))
            return
        _log.info("preflightsim.faults_loaded", path=str(self._path), faults=data)
        with self._lock:
            self._stamp = stamp
            self.plan = plan
            self._left = {"unavailable": plan.unavailable, "slow": plan.slow, "drop": plan.drop}

    def next_call(self) -> CallFaults:
        self.refresh()
        with self._lock:
            if self._left["unavailable"] > 0:
                self._left["unavailable"] -= 1
                self._count("unavailable")
                return CallFaults(unavailable=True)
            out = CallFaults()
            if self._left["slow"] > 0:
                self._left["slow"] -= 1
                self._count("slow")
                out.slow_seconds = self.plan.slow_seconds
            if self._left["drop"] > 0:
                self._left["drop"] -= 1
                self._count("drop")
                out.drop_after_bytes = self.plan.drop_after_bytes
            return out

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def page_wires(self, entries: list[Entry], previous: Entry | None, region: str) -> list[bytes]:
        """The framed records to send for `entries`, with the record faults applied."""
        plan = self.plan
        if not plan.corrupts_records:
            return [entry.wire for entry in entries]
        wires: list[bytes] = []
        if plan.overlap and previous is not None:
            wires.append(previous.wire)
            self._count("overlap")
        for entry in entries:
            position = entry.position
            if position in plan.omit_at:
                self._count("omit")
                continue
            wire = _conflicting(entry.wire) if position in plan.changed_at else entry.wire
            if position in plan.changed_at:
                self._count("changed")
            if position in plan.wrong_digest_at:
                wire = _wrong_digest(wire)
                self._count("wrong_digest")
            kind = plan.malformed_at.get(position)
            if kind is not None:
                wire = malformed(wire, kind, region)
                self._count(f"malformed:{kind}")
            wires.append(wire)
            if position in plan.repeat_at:
                wires.append(wire)
                self._count("repeat")
            if position in plan.conflict_at:
                wires.append(_conflicting(entry.wire))
                self._count("conflict")
        if plan.reorder and entries:
            shuffler = random.Random(plan.seed * 1_000_003 + entries[0].position)  # noqa: S311
            shuffler.shuffle(wires)
        return wires


def _plan_fields(plan: FaultPlan, data: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in data}


def _record(wire: bytes) -> job_pb2.JobRecord:
    return job_pb2.JobRecord.FromString(unframe(wire))


def _wrong_digest(wire: bytes) -> bytes:
    record = _record(wire)
    digest = bytearray(record.canonical_payload_sha256)
    digest[0] ^= 0xFF
    record.canonical_payload_sha256 = bytes(digest)
    return frame(RECORDS_FIELD, record.SerializeToString())


def _conflicting(wire: bytes) -> bytes:
    record = _record(wire)
    record.canonical_payload = record.canonical_payload + b" "
    record.canonical_payload_sha256 = hashlib.sha256(record.canonical_payload).digest()
    return frame(RECORDS_FIELD, record.SerializeToString())


def malformed(wire: bytes, kind: str, region: str) -> bytes:
    record = _record(wire)
    if kind == "garbage":
        # Field number 0 does not exist: no protobuf parser accepts this.
        return frame(RECORDS_FIELD, b"\x00\x01" + record.SerializeToString()[:40])
    if kind == "bad_utf8":
        job_id = record.job_id.encode()
        record.ClearField("job_id")
        # A proto3 string must be UTF-8; \xff\xfe never is.
        invalid = b"\x0a" + bytes([len(job_id) + 2]) + job_id + b"\xff\xfe"
        return frame(RECORDS_FIELD, invalid + record.SerializeToString())
    if kind == "no_job_id":
        record.ClearField("job_id")
    elif kind == "bad_revision":
        record.revision = 0
    elif kind == "short_digest":
        record.canonical_payload_sha256 = record.canonical_payload_sha256[:16]
    elif kind == "wrong_region":
        record.region = region + "-elsewhere"
    elif kind == "no_cursor":
        record.ClearField("cursor")
    else:
        raise FaultConfigError(f"unknown malformed kind {kind!r}")
    return frame(RECORDS_FIELD, record.SerializeToString())
