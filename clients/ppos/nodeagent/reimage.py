"""A re-image as a simulated piece of work: it takes a while, says how far it
got, and succeeds or fails the way the agent was told to (`--fail-image`)."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ppos.controlplane.noderegistry.v1 import node_pb2


@dataclass
class Reimage:
    """One re-image command being worked on."""

    command: node_pb2.NodeCommand
    seconds: float
    fails: bool
    started: float = field(default_factory=time.monotonic)
    reported_step: int = 0  # the last quarter announced

    @property
    def command_id(self) -> str:
        return self.command.command_id

    @property
    def target(self) -> node_pb2.ContainerVersion:
        return self.command.reimage.target

    def progress(self, now: float | None = None) -> float:
        """How far the work is, 0.0 to 1.0."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        return 1.0 if self.seconds <= 0 else min(1.0, elapsed / self.seconds)

    def new_step(self) -> int | None:
        """The next quarter reached since last asked (25, 50, 75, 100 percent), if any."""
        step = int(self.progress() * 4)
        if step > self.reported_step:
            self.reported_step = step
            return step * 25
        return None

    def done(self) -> bool:
        return self.progress() >= 1.0

    def outcome_message(self) -> str:
        target = f"{self.target.image}@{self.target.digest}"
        if self.fails:
            return f"simulated failure: image {target} did not start (health check failed)"
        return f"now running {target}"


def fails(image: str, patterns: Sequence[str]) -> bool:
    """Whether a re-image to `image` is to fail (shell-style patterns, e.g. `*:broken*`)."""
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)
