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
from ppos.preflightsim.records import SourceRecord, format_line

ODD_SAMPLES = Path(__file__).with_name("samples") / "odd.jsonl"
EPOCH_MS = 1779116602472
TENANTS = ("acme-print", "nordic-labels", "hanse-packaging", "iberia-books", "kanto-commercial")
QUEUE_KINDS = ("offset", "digital", "large-format", "labels")
ENGINE_VERSIONS = ("15.1.2", "15.1.3", "15.2.0")
SEVERITIES = ("error", "warning", "info")
RULES = (
    ("fonts", "FONT_NOT_EMBEDDED", "Font {font} is not embedded"),
    ("fonts", "FONT_TYPE3", "Type 3 font {font} used for text"),
    ("images", "IMAGE_RESOLUTION_LOW", "Image {image} has an effective resolution of {ppi} ppi"),
    ("colour", "RGB_IN_CMYK_JOB", "DeviceRGB used on page {page} in a CMYK job"),
    ("colour", "SPOT_NOT_IN_PALETTE", "Separation {spot} is not in the shop's palette"),
    ("colour", "TAC_EXCEEDED", "Total area coverage {tac}% exceeds 300%"),
    ("geometry", "BLEED_MISSING", "Bleed of {bleed} mm is less than 3 mm"),
    ("geometry", "TRIMBOX_MISSING", "Page {page} has no TrimBox"),
    (
        "transparency",
        "TRANSPARENCY_PDFX1A",
        "Transparency on page {page} is not allowed in PDF/X-1a",
    ),
    ("lines", "HAIRLINE", "Line of {width} pt is thinner than 0.125 pt"),
)
FONTS = (
    "MinionPro-Regular",
    "MyriadPro-Bold",
    "Helvetica",
    "TimesNewRomanPSMT",
    "NotoSansCJKjp-Regular",
    "ArialMT",
    "Garamond-Italic",
    "DINPro-Medium",
)
SPOTS = ("PANTONE 286 C", "PANTONE 185 C", "HKS 43 K", "Varnish", "White", "Die Cut")
STATES_WEIGHTED = (
    (job_pb2.GOVERNANCE_STATE_COMPLETED, job_pb2.JOB_STATUS_COMPLETED, 30),
    (job_pb2.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS, job_pb2.JOB_STATUS_COMPLETED, 30),
    (job_pb2.GOVERNANCE_STATE_DEGRADED, job_pb2.JOB_STATUS_COMPLETED, 12),
    (job_pb2.GOVERNANCE_STATE_PARTIAL, job_pb2.JOB_STATUS_COMPLETED, 10),
    (job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT, job_pb2.JOB_STATUS_FAILED, 12),
    (job_pb2.GOVERNANCE_STATE_UNSPECIFIED, job_pb2.JOB_STATUS_RUNNING, 6),
)
A4 = [0, 0, 595.276, 841.89]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ulid_like(rng: random.Random) -> str:
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "01j" + "".join(rng.choice(alphabet) for _ in range(23))


def node_pool(region: str, seed: int, size: int = 12) -> list[str]:
    rng = random.Random(f"nodes:{region}:{seed}")  # noqa: S311 - test data
    return [f"node_{_ulid_like(rng)}" for _ in range(size)]


def _image_digest(rng: random.Random) -> str:
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


class ReportWriter:
    """Builds one engine report of about `target` bytes for a job attempt."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def _box(self, inset: float) -> list[float]:
        return [round(v + (inset if i < 2 else -inset), 3) for i, v in enumerate(A4)]

    def _page(self, number: int, fonts: list[str]) -> dict[str, Any]:
        rng = self._rng
        bleed = rng.choice((0.0, 8.504, 8.504, 8.504, 5.669))
        page: dict[str, Any] = {
            "number": number,
            "boxes": {
                "MediaBox": self._box(0),
                "CropBox": self._box(0),
                "BleedBox": self._box(max(0.0, 8.504 - bleed)),
                "TrimBox": self._box(8.504),
                "ArtBox": self._box(22.677),
            },
            "rotation": rng.choice((0, 0, 0, 90)),
            "colourSpaces": sorted(
                rng.sample(
                    [
                        "DeviceCMYK",
                        "DeviceGray",
                        "DeviceRGB",
                        "ICCBased/CMYK",
                        *[f"Separation/{s}" for s in SPOTS],
                    ],
                    rng.randint(1, 4),
                )
            ),
            "fonts": sorted(rng.sample(fonts, min(len(fonts), rng.randint(0, 3)))),
            "inkCoverage": {ink: round(rng.uniform(0, 95), 2) for ink in ("C", "M", "Y", "K")},
            "images": [
                {
                    "id": f"Im{number}_{i}",
                    "effectivePpi": round(rng.uniform(72, 600), 1),
                    "colourSpace": rng.choice(("DeviceCMYK", "DeviceRGB", "ICCBased/RGB")),
                    "bbox": [round(rng.uniform(0, 500), 3) for _ in range(4)],
                    "compression": rng.choice(("DCTDecode", "FlateDecode", "JPXDecode")),
                }
                for i in range(rng.randint(0, 3))
            ],
        }
        return page

    def _finding(self, index: int, page: int, fonts: list[str]) -> dict[str, Any]:
        rng = self._rng
        category, rule, template = rng.choice(RULES)
        message = template.format(
            font=rng.choice(fonts) if fonts else "F1",
            image=f"Im{page}_0",
            ppi=round(rng.uniform(72, 220), 1),
            page=page,
            spot=rng.choice(SPOTS),
            tac=round(rng.uniform(301, 380), 1),
            bleed=round(rng.uniform(0, 2.9), 2),
            width=round(rng.uniform(0.01, 0.12), 3),
        )
        return {
            "id": f"F-{index:05d}",
            "ruleId": f"PPOS.{category.upper()}.{rule}",
            "severity": rng.choices(SEVERITIES, weights=(3, 5, 2))[0],
            "category": category,
            "page": page,
            "bbox": [round(rng.uniform(0, 595), 3) for _ in range(4)],
            "message": message,
            "object": {"type": category.rstrip("s"), "ref": f"{rng.randint(3, 9999)} 0 R"},
            "fixable": rng.random() < 0.4,
        }

    def report(
        self,
        *,
        job_id: str,
        attempt: int,
        state: int,
        node_id: str,
        engine_version: str,
        target: int,
    ) -> dict[str, Any]:
        rng = self._rng
        fonts = [
            f"{''.join(rng.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZ') for _ in range(6))}+{name}"
            for name in rng.sample(FONTS, rng.randint(1, 5))
        ]
        report: dict[str, Any] = {
            "schema": "printprice.preflight.report/3",
            "jobId": job_id,
            "attempt": attempt,
            "engine": {
                "name": "ppos-preflight-engine",
                "version": engine_version,
                "node": node_id,
                "profile": {
                    "id": rng.choice(("PDFX4_2010_SHEETFED", "PDFX1A_2003_NEWS", "PDFX4_DIGITAL")),
                    "checksum": "sha256:"
                    + "".join(rng.choice("0123456789abcdef") for _ in range(16)),
                },
            },
            "document": {
                "fileName": f"{job_id}.pdf",
                "fileSize": rng.randint(40_000, 900_000_000),
                "pdfVersion": rng.choice(("1.4", "1.6", "1.7", "2.0")),
                "producer": rng.choice(("Adobe InDesign 19.2", "QuarkXPress 2024", "Affinity 2.4")),
                "outputIntent": {"condition": rng.choice(("FOGRA51", "FOGRA39", "GRACoL2013"))},
            },
            "fonts": [
                {
                    "id": f"F{i + 1}",
                    "name": name,
                    "type": rng.choice(("Type1C", "TrueType", "CIDFontType0C", "Type3")),
                    "embedded": rng.random() < 0.9,
                    "subset": True,
                }
                for i, name in enumerate(fonts)
            ],
            "colourSpaces": [
                {"name": f"Separation/{spot}", "alternate": "DeviceCMYK", "tintTransform": "Type 4"}
                for spot in rng.sample(SPOTS, rng.randint(0, 3))
            ],
            "pages": [],
            "findings": [],
        }
        if state == job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT:
            report["runtime"] = {
                "exitCode": rng.choice((137, 139, 134)),
                "reason": rng.choice(("OOMKilled", "EngineCrashed", "LicenceUnavailable")),
                "memoryLimitMiB": rng.choice((2048, 4096)),
            }
        if state == job_pb2.GOVERNANCE_STATE_DEGRADED:
            report["degraded"] = {
                "mode": rng.choice(("fallback-engine", "reduced-checks", "slow-path")),
                "skippedChecks": rng.sample([r[1] for r in RULES], 2),
            }
        budget = target - len(_compact(report))
        number = 0
        while budget > 0 or number == 0:
            number += 1
            page = self._page(number, [f["name"] for f in report["fonts"]])
            report["pages"].append(page)
            budget -= len(_compact(page)) + 1
            if state != job_pb2.GOVERNANCE_STATE_COMPLETED and rng.random() < 0.7:
                for _ in range(rng.randint(1, 3)):
                    finding = self._finding(len(report["findings"]) + 1, number, fonts)
                    report["findings"].append(finding)
                    budget -= len(_compact(finding)) + 1
        if state == job_pb2.GOVERNANCE_STATE_PARTIAL:
            done = max(1, number // 2)
            report["partial"] = {
                "processedPages": [1, done],
                "remainingPages": [done + 1, number + rng.randint(1, 40)],
            }
        counts = {s: sum(1 for f in report["findings"] if f["severity"] == s) for s in SEVERITIES}
        report["summary"] = {
            "errors": counts["error"],
            "warnings": counts["warning"],
            "infos": counts["info"],
            "pages": number,
            "durationMs": rng.randint(300, 900_000),
        }
        return report


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
        return _compact(report).encode()
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
