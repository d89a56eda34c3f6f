"""deploy/prometheus/ppos-alerts.yaml: well formed (promtool when installed), every
expression over metrics the plane defines, with labels they carry, and the same
rules as the portal's alerts page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import ppos.controlplane.core.metrics  # noqa: F401 - defines the plane's metrics
from ppos.portal.views.alerts import RULES

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy/prometheus/ppos-alerts.yaml"
# Portal rules over what /metrics does not export (the plane has no per-region node
# readiness gauge), so Prometheus cannot evaluate them.
PORTAL_ONLY = {"PposNodesLost", "PposNodesNotReady"}


def _metrics() -> dict[str, set[str]]:
    """Every sample name of the plane's metrics with its label names."""
    names: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.collect():
            if not family.name.startswith("ppos_"):
                continue
            labels = {label for sample in family.samples for label in sample.labels}
            labels |= set(getattr(collector, "_labelnames", ()))
            for sample_name in {family.name, *(s.name for s in family.samples)}:
                names.setdefault(sample_name, set()).update(labels)
            if family.type == "counter":
                names.setdefault(family.name + "_total", set()).update(labels)
    return names


def _rules() -> list[dict[str, object]]:
    loaded = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_expression_names_metrics_and_labels_the_plane_has() -> None:
    metrics = _metrics()
    assert "ppos_sync_lag_seconds" in metrics  # the lookup itself works
    for rule in _rules():
        expr = str(rule["expr"])
        used = set(re.findall(r"\bppos_[a-z_]+\b", expr))
        assert used, rule["alert"]
        for name in used:
            assert name in metrics, f"{rule['alert']}: no metric {name}"
        known = set().union(*(metrics[name] for name in used))
        grouped = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr)
        selected = re.findall(r"\{([a-z_]+)=", expr)
        for label in [x.strip() for g in grouped for x in g.split(",")] + selected:
            assert label in known, f"{rule['alert']}: {label} is not a label of {used}"
        assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]


def test_the_file_holds_the_portals_rules() -> None:
    in_file = {str(rule["alert"]) for rule in _rules()}
    portal = {name for name, _ in RULES}
    assert portal - PORTAL_ONLY <= in_file
    assert portal >= PORTAL_ONLY


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES_FILE)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
