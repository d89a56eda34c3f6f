"""Settings of the governance service."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class GovernanceSettings:
    """Governance: where the regional preflight gateways are."""

    gateways: dict[str, str] = setting(
        "PPOS_GATEWAYS",
        "regional preflight gateways, REGION=HOST:PORT comma-separated",
        default_factory=dict,
    )

    def validate(self) -> None:
        return None
