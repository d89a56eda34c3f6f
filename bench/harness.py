"""The benchmark harness: modes, results, ratios, targets, a printed report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["smoke", "full"]
RESULTS_DIR = Path(".bench-results")


@dataclass
class Target:
    """A stated goal, e.g. ratio >= 0.75. `met` is None when the mode cannot judge it."""

    name: str
    value: float
    op: Literal[">=", "<="]
    threshold: float
    met: bool | None = None

    def judge(self, mode: Mode) -> None:
        ok = self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold
        self.met = ok if mode == "full" else None


@dataclass
class Result:
    benchmark: str
    mode: Mode
    figures: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str, value: float, unit: str) -> float:
        self.figures[name] = value
        self.units[name] = unit
        return value

    def ratio(self, name: str, subject: float, baseline: float) -> float:
        return self.figure(name, subject / baseline if baseline else float("nan"), "x")

    def target(self, name: str, op: Literal[">=", "<="], threshold: float) -> None:
        goal = Target(name, self.figures[name], op, threshold)
        goal.judge(self.mode)
        self.targets.append(goal)

    def report(self) -> str:
        lines = [f"== {self.benchmark} ({self.mode})"]
        for name, value in self.figures.items():
            lines.append(f"  {name:<48} {value:>14.4g} {self.units[name]}")
        for goal in self.targets:
            verdict = {True: "met", False: "MISSED", None: "not judged in smoke mode"}[goal.met]
            lines.append(f"  target {goal.name} {goal.op} {goal.threshold:g}: {verdict}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def save(self) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{self.benchmark}-{self.mode}.json"
        payload: dict[str, Any] = asdict(self)
        payload["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path


Benchmark = Callable[[Mode], Awaitable[Result]]
