"""VerifyMirror: the chain and checkpoints verified, and against the source when asked."""

from __future__ import annotations

from ppos.controlplane.core.validation import Violations
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync import convert
from ppos.controlplane.services.registry_sync.mirror_verifier import MirrorVerifier
from ppos.controlplane.services.registry_sync.source_verifier import SourceVerifier, to_proto

# Source divergences listed per region unless the caller asks for another number.
DEFAULT_SOURCE_DIVERGENCES = 20
MAX_SOURCE_DIVERGENCES = 1000


def divergence_limit(asked: int, violations: Violations) -> int:
    if not 0 <= asked <= MAX_SOURCE_DIVERGENCES:
        violations.add(
            "max_divergences",
            f"must be between 0 (the default, {DEFAULT_SOURCE_DIVERGENCES}) "
            f"and {MAX_SOURCE_DIVERGENCES}",
        )
    return asked or DEFAULT_SOURCE_DIVERGENCES


async def verify_mirror(
    verifier: MirrorVerifier,
    source_verifier: SourceVerifier,
    regions: list[str],
    *,
    payloads: bool,
    against_source: bool,
    limit: int,
) -> pb.VerifyMirrorResponse:
    results = await verifier.verify(regions, payloads=payloads)
    verifications = [convert.mirror_verification(report, at) for report, at in results]
    if against_source:
        for verification in verifications:
            report = await source_verifier.compare(verification.region, limit=limit)
            verification.source.CopyFrom(to_proto(report))
    return pb.VerifyMirrorResponse(verifications=verifications)
