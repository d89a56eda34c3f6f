"""Deliveries in flight: at most so many in all, and so many per receiver.

A receiver that is slow or unreachable (its calls run to their deadline) fills
its own slots only: the other gateways' commands keep flowing.
"""

from __future__ import annotations

from collections import Counter


class DeliverySlots:
    def __init__(self, total: int, per_target: int) -> None:
        self.total = total
        self.per_target = per_target
        self._busy: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return self._busy.total()

    def free(self) -> int:
        return max(0, self.total - self.in_flight)

    def full_targets(self) -> set[str]:
        return {target for target, busy in self._busy.items() if busy >= self.per_target}

    def room(self) -> dict[str, int]:
        """Free slots of each target with deliveries in flight (the others: `per_target`)."""
        return {target: max(0, self.per_target - busy) for target, busy in self._busy.items()}

    def take(self, target: str) -> None:
        self._busy[target] += 1

    def give(self, target: str) -> None:
        self._busy[target] -= 1
        if self._busy[target] <= 0:
            del self._busy[target]
