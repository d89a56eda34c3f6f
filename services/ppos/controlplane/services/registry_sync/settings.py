"""Settings of the registry sync."""

from __future__ import annotations

import dataclasses

from ppos.controlplane.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class RegistrySyncSettings:
    """Registry sync: which regional registries to pull from."""

    regions: dict[str, str] = setting(
        "PPOS_SYNC_REGIONS",
        "regional registries to sync, REGION=HOST:PORT comma-separated",
        default_factory=dict,
    )

    def validate(self) -> None:
        return None
