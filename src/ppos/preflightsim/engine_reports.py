"""Engine reports as preflight engines write them: page boxes, fonts, colour
spaces, images, ink coverage and findings with severities, about a target size."""

from __future__ import annotations

import json
import random
from typing import Any

from ppos.preflight.v1 import job_pb2

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
A4 = [0, 0, 595.276, 841.89]


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
        budget = target - len(compact(report))
        number = 0
        while budget > 0 or number == 0:
            number += 1
            page = self._page(number, [f["name"] for f in report["fonts"]])
            report["pages"].append(page)
            budget -= len(compact(page)) + 1
            if state != job_pb2.GOVERNANCE_STATE_COMPLETED and rng.random() < 0.7:
                for _ in range(rng.randint(1, 3)):
                    finding = self._finding(len(report["findings"]) + 1, number, fonts)
                    report["findings"].append(finding)
                    budget -= len(compact(finding)) + 1
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
