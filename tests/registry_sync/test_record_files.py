"""The simulator's JSON Lines format keeps every engine output byte for byte."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from ppos.preflight.v1 import job_pb2
from ppos.preflightsim import samples
from ppos.preflightsim.jsonspan import SpanError, member_spans
from ppos.preflightsim.records import (
    RecordFileError,
    SourceRecord,
    format_line,
    iter_lines,
    parse_line,
    read_file,
)
from tests.registry_sync.harness import ODD_SAMPLES

ODD_PAYLOADS = [
    b'{"n":12345678901234567890123456789,"m":-9223372036854775809}',
    b'{"tac":1e400,"r":0.1,"z":-0.0,"t":1E-400}',
    b'{"a":"\\u00e9\\ud83d\\ude00\\ud800","b":"\\"q\\"\\\\"}',
    b'{"k":1,"k":2}',
    b'{  "z" :1 ,"a":\t2}',
    b"[" * 300 + b"]" * 300,
    b'"just a string"',
    b"1e400",
]


def independent_payload(line: bytes) -> bytes:
    """The payload of a sample line found without the simulator's scanner.

    Every committed sample writes `canonicalPayload` (or its base64 form) last,
    so the raw value is everything between the key and the closing brace.
    """
    raw_key = b'"canonicalPayload": '
    if raw_key in line:
        start = line.index(raw_key) + len(raw_key)
        return line[start : line.rindex(b"}")].strip(b" \t")
    return base64.b64decode(json.loads(line)["canonicalPayloadBase64"])


def test_every_odd_sample_is_read_byte_for_byte() -> None:
    lines = [line for _, line in iter_lines(ODD_SAMPLES)]
    records = read_file(ODD_SAMPLES)
    assert len(records) == len(lines) >= 12
    for line, record in zip(lines, records, strict=True):
        assert record.payload == independent_payload(line)
        assert (
            json.loads(line)["canonicalPayloadSha256"] == hashlib.sha256(record.payload).hexdigest()
        )


def test_odd_samples_hold_what_json_libraries_would_change() -> None:
    payloads = b"\n".join(record.payload for record in read_file(ODD_SAMPLES))
    for needle in (
        b"12345678901234567890123456789",  # beyond int64 and double precision
        b"1e400",  # beyond double range
        b"0.30000000000000004",
        b"-0.0",
        b"\\u00e9",  # an escape, not the character
        b"\\ud800",  # a lone surrogate
        b'"severity":"warning","severity":"error"',  # a duplicate key
        b'{  "z" :1 ,"a":\t2',  # whitespace and key order
        b"\r\n",  # a Windows engine's line breaks
        b"\xef\xbb\xbf{",  # a byte order mark
        b"R\xe9sultat",  # not UTF-8
        b"[" * 200,  # deep nesting
    ):
        assert needle in payloads, needle


@pytest.mark.parametrize("payload", ODD_PAYLOADS)
def test_raw_payload_is_sliced_not_reencoded(payload: bytes) -> None:
    line = b'{"jobId": "job_1_00001", "canonicalPayload":   ' + payload + b'  , "revision": 3}'
    record = parse_line(line)
    assert record.payload == payload
    assert record.revision == 3


@pytest.mark.parametrize(
    "payload", [*ODD_PAYLOADS, b"{\r\n}\r\n", b"\xef\xbb\xbf{}", b"\xff\xfe", b" {} ", b""]
)
def test_format_then_parse_round_trips(payload: bytes) -> None:
    record = SourceRecord(
        job_id="fix_1779116602946",
        tenant_id="acme-print",
        queue_id="acme-print-offset",
        revision=2,
        status=job_pb2.JOB_STATUS_FAILED,
        governance_state=job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
        node_id="node_01jd3v6k2m8x9q4r5s6t7v8w9y",
        container_image="registry.printprice.example/preflight-engine:15.1.2",
        create_time=None,
        update_time=None,
        payload=payload,
    )
    line = format_line(record)
    assert b"\n" not in line
    assert parse_line(line) == record


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"jobId": "j1", "canonicalPayload": {}, "canonicalPayload": []}', "twice"),
        (b'{"jobId": "j1", "canonicalPayload": {}, "colour": 1}', "unknown keys"),
        (b'{"jobId": "j1"}', "exactly one"),
        (b'{"jobId": "j1", "canonicalPayloadBase64": "!!"}', "base64"),
        (b'{"canonicalPayload": {}}', "jobId"),
        (b'{"jobId": "j1", "canonicalPayload": {}, "canonicalPayloadSha256": "00"}', "match"),
        (b'{"jobId": "j1", "canonicalPayload": {}, "status": "EXPLODED"}', "unknown value"),
        (b'{"jobId": "j1", "canonicalPayload": {}, "createTime": "yesterday"}', "RFC 3339"),
        (b'{"jobId": "j1", "canonicalPayload": {', "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_bad_lines_are_refused_with_the_reason(line: bytes, problem: str) -> None:
    with pytest.raises(RecordFileError, match=problem):
        parse_line(line)


def test_a_bad_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = format_line(samples.generate(region="eu-west-1", count=1, size=300)[0])
    path.write_bytes(good + b"\n\n// a comment\n" + b'{"jobId": 5, "canonicalPayload": {}}\n')
    with pytest.raises(RecordFileError, match=r"bad\.jsonl:4: jobId"):
        read_file(path)


def test_member_spans_checks_structure() -> None:
    spans = member_spans(b' { "a" : [1, {"b": "}"}] , "c":"x\\"y" } ')
    assert set(spans) == {"a", "c"}
    for text in (b'{"a": [1}', b'{"a": "open}', b'{"a" 1}', b'{"a": 1} x', b"{,}"):
        with pytest.raises(SpanError):
            member_spans(text)


def test_generator_is_deterministic_and_spans_200_bytes_to_2_mb() -> None:
    first = samples.realistic_set("eu-west-1")
    again = samples.realistic_set("eu-west-1")
    assert [r.payload for r in first] == [r.payload for r in again]
    sizes = sorted(len(r.payload) for r in first)
    assert 200 <= sizes[0] < 400
    assert 1_900_000 <= sizes[-1] <= 2_300_000
    states = {r.governance_state for r in first}
    assert {
        job_pb2.GOVERNANCE_STATE_DEGRADED,
        job_pb2.GOVERNANCE_STATE_PARTIAL,
        job_pb2.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS,
        job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
    } <= states
    assert all(r.node_id.startswith("node_") for r in first)
    assert any(r.job_id.startswith("fix_") for r in first)
    assert any(r.revision == 2 for r in first)  # a retry is a new revision
    report = next(
        r for r in first if 10_000 < len(r.payload) < 200_000 and b"\r\n" not in r.payload
    )
    parsed = json.loads(report.payload)
    assert {"MediaBox", "TrimBox", "BleedBox"} <= set(parsed["pages"][0]["boxes"])
    assert parsed["fonts"]
    assert "severity" in json.dumps(parsed["findings"])


def test_bulk_generation_keeps_payloads_distinct() -> None:
    records = samples.generate(region="us-east-1", count=300, size=4096, distinct=20)
    assert len({r.payload for r in records}) == 300
    assert len({(r.job_id, r.revision) for r in records}) == 300
