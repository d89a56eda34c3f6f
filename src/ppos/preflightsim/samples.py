"""Deterministic realistic sample records: what regional preflight engines write.

Reports are deep and nested the way preflight engines write them (page boxes,
fonts, colour spaces, images, ink coverage, findings with severities), with
governance states and the nodes that ran each attempt, job ids like
`job_1779116602472_1d246` and `fix_1779116602946`, and payloads from about
200 bytes to 2 MB. The same seed always gives the same bytes.

`python -m ppos.preflightsim.samples --out DIR` writes `realistic-<region>.jsonl`
(the sample set the demo and the tests serve next to the committed odd
samples in `samples/odd.jsonl`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.engine_reports import ReportWriter, compact
from ppos.preflightsim.records import SourceRecord, format_line

ODD_SAMPLES = Path(__file__).with_name("samples") / "odd.jsonl"
EPOCH_MS = 1779116602472
TENANTS = ("acme-print", "nordic-labels", "hanse-packaging", "iberia-books", "kanto-commercial")
QUEUE_KINDS = ("offset", "digital", "large-format", "labels")
ENGINE_VERSIONS = ("15.1.2", "15.1.3", "15.2.0")
STATES_WEIGHTED = (
    (job_pb2.GOVERNANCE_STATE_COMPLETED, job_pb2.JOB_STATUS_COMPLETED, 30),
    (job_pb2.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS, job_pb2.JOB_STATUS_COMPLETED, 30),
    (job_pb2.GOVERNANCE_STATE_DEGRADED, job_pb2.JOB_STATUS_COMPLETED, 12),
    (job_pb2.GOVERNANCE_STATE_PARTIAL, job_pb2.JOB_STATUS_COMPLETED, 10),
    (job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT, job_pb2.JOB_STATUS_FAILED, 12),
    (job_pb2.GOVERNANCE_STATE_UNSPECIFIED, job_pb2.JOB_STATUS_RUNNING, 6),
)


def _ulid_like(rng: random.Random) -> str:
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "01j" + "".join(rng.choice(alphabet) for _ in range(23))


def node_pool(region: str, seed: int, size: int = 12) -> list[str]:
    rng = random.Random(f"nodes:{region}:{seed}")  # noqa: S311 - test data
    return [f"node_{_ulid_like(rng)}" for _ in range(size)]


def _image_digest(rng: random.Random) -> str:
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


def _small_payload(job_id: str, state: int, node_id: str, rng: random.Random) -> dict[str, Any]:
    """About 200 bytes: a progress note, or a summary-only report."""
    if state == job_pb2.GOVERNANCE_STATE_UNSPECIFIED:
        return {
            "schema": "printprice.preflight.progress/1",
            "jobId": job_id,
            "state": "running",
            "node": node_id,
            "pagesDone": rng.randint(0, 40),
            "startedAt": "2026-05-18T12:23:22.472Z",
        }
    return {
        "schema": "printprice.preflight.summary/1",
        "jobId": job_id,
        "node": node_id,
        "summary": {"errors": rng.randint(0, 3), "warnings": rng.randint(0, 9), "pages": 1},
        "finishedAt": "2026-05-18T12:23:22.472Z",
    }


def _encode(report: dict[str, Any], rng: random.Random) -> bytes:
    style = rng.random()
    if style < 0.8:
        return compact(report).encode()
    if style < 0.95:
        return json.dumps(report).encode()
    return json.dumps(report, indent=2).replace("\n", "\r\n").encode()  # a Windows engine


def generate(
    *,
    region: str,
    count: int,
    seed: int = 1,
    sizes: Iterator[int] | None = None,
    size: int | None = None,
    start_ms: int = EPOCH_MS,
    distinct: int = 1_000_000,
) -> list[SourceRecord]:
    """`count` feed changes (attempts of jobs); see iter_records."""
    return list(
        iter_records(
            region=region,
            count=count,
            seed=seed,
            sizes=sizes,
            size=size,
            start_ms=start_ms,
            distinct=distinct,
        )
    )


def iter_records(
    *,
    region: str,
    count: int,
    seed: int = 1,
    sizes: Iterator[int] | None = None,
    size: int | None = None,
    start_ms: int = EPOCH_MS,
    distinct: int = 1_000_000,
) -> Iterator[SourceRecord]:
    """`count` feed changes (attempts of jobs) of about `size` bytes (or from `sizes`).

    After `distinct` reports have been written, further payloads reuse one of
    them with the job id replaced (fast enough for 100,000 records; every
    payload, and so every digest, still differs).
    """
    templates: list[tuple[str, bytes]] = []
    rng = random.Random(f"records:{region}:{seed}")  # noqa: S311 - test data
    writer = ReportWriter(rng)
    nodes = node_pool(region, seed)
    images = {v: _image_digest(rng) for v in ENGINE_VERSIONS}
    produced = 0
    clock = start_ms
    while produced < count:
        clock += rng.randint(40, 4000)
        fix = rng.random() < 0.1
        job_id = f"fix_{clock}" if fix else f"job_{clock}_{rng.getrandbits(20):05x}"
        tenant = rng.choice(TENANTS)
        queue = f"{tenant}-{rng.choice(QUEUE_KINDS)}"
        created = dt.datetime.fromtimestamp(clock / 1000, dt.UTC)
        states = [rng.choices(STATES_WEIGHTED, weights=[w for *_, w in STATES_WEIGHTED])[0]]
        if states[0][0] == job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT:
            states.append(STATES_WEIGHTED[rng.choice((0, 1))])  # the retry, a new revision
        for attempt, (state, status, _) in enumerate(states, start=1):
            if produced >= count:
                break
            target = next(sizes) if sizes is not None else (size or 4096)
            node = rng.choice(nodes)
            version = rng.choice(ENGINE_VERSIONS)
            if target < 600:
                payload = json.dumps(_small_payload(job_id, state, node, rng)).encode()
            elif len(templates) >= distinct:
                template_job, template = templates[produced % distinct]
                payload = template.replace(template_job.encode(), job_id.encode())
            else:
                payload = _encode(
                    writer.report(
                        job_id=job_id,
                        attempt=attempt,
                        state=state,
                        node_id=node,
                        engine_version=version,
                        target=target,
                    ),
                    rng,
                )
                templates.append((job_id, payload))
            updated = created + dt.timedelta(milliseconds=rng.randint(500, 600_000) * attempt)
            produced += 1
            yield (
                SourceRecord(
                    job_id=job_id,
                    tenant_id=tenant,
                    queue_id=queue,
                    revision=attempt,
                    status=status,
                    governance_state=state,
                    node_id=node,
                    container_image=(
                        f"registry.printprice.example/preflight-engine:{version}@{images[version]}"
                    ),
                    create_time=created,
                    update_time=updated,
                    payload=payload,
                )
            )


def realistic_sizes(count: int, seed: int = 1) -> Iterator[int]:
    """Sizes from 200 bytes to 2 MB: both ends first, then log-uniform between."""
    rng = random.Random(f"sizes:{seed}")  # noqa: S311 - test data
    fixed = [200, 2 * 1024 * 1024, 1024 * 1024, 300, 4096, 65536]
    for index in range(count):
        if index < len(fixed):
            yield fixed[index]
        else:
            yield int(math.exp(rng.uniform(math.log(200), math.log(512 * 1024))))


def realistic_set(region: str, *, count: int = 48, seed: int = 1) -> list[SourceRecord]:
    return generate(region=region, count=count, seed=seed, sizes=realistic_sizes(count, seed))


def write_jsonl(records: list[SourceRecord], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for record in records:
            handle.write(format_line(record) + b"\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ppos.preflightsim.samples",
        description="Write the deterministic realistic sample set (JSON Lines).",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=0, help="fixed payload size (default: mixed)")
    args = parser.parse_args(argv)
    if args.size:
        records = generate(region=args.region, count=args.count, seed=args.seed, size=args.size)
    else:
        records = realistic_set(args.region, count=args.count, seed=args.seed)
    path = write_jsonl(records, args.out / f"realistic-{args.region}.jsonl")
    print(f"wrote {len(records)} records to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
