"""Who a node agent is: its node id and credential, kept in a file between runs.

A restarted agent reads its identity back and carries on as the same node
instead of enrolling again (an enrollment token works once). The file holds a
credential, so it is written at mode 0600, atomically (a crash mid-write
never leaves half a credential).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    """A node's id and its current credential (never printed)."""

    node_id: str
    credential: str = field(repr=False)
    expire_time: float  # seconds since the epoch
    issue_time: float


class IdentityStore:
    """One identity file, or none (`path` None: kept in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> Identity | None:
        if self.path is None or not self.path.exists():
            return None
        data = json.loads(self.path.read_text())
        return Identity(
            node_id=str(data["node_id"]),
            credential=str(data["credential"]),
            expire_time=float(data["expire_time"]),
            issue_time=float(data["issue_time"]),
        )

    def save(self, identity: Identity) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(identity), out)
        tmp.replace(self.path)
