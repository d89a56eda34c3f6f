"""Governance settings: what is accepted, and the message when something is not."""

from __future__ import annotations

import pytest

from ppos.controlplane.core.settings import ConfigError, load_section
from ppos.controlplane.services.governance.settings import GovernanceSettings


def load(**env: str) -> GovernanceSettings:
    settings = load_section(GovernanceSettings, None, env)
    settings.validate()
    return settings


def test_defaults_and_a_full_configuration() -> None:
    default = load()
    assert default.gateways == {}
    assert default.governance_background == ["dispatcher", "reconciler", "admin-jobs"]
    configured = load(
        PPOS_GATEWAYS="eu-west-1=gw-eu:7001,us-east-1=10.0.0.5:7001",
        PPOS_GOVERNANCE_BACKGROUND="dispatcher",
        PPOS_OUTBOX_LEASE="45s",
        PPOS_OUTBOX_CALL_TIMEOUT="15s",
        PPOS_OUTBOX_MAX_ATTEMPTS="20",
    )
    assert configured.gateways["us-east-1"] == "10.0.0.5:7001"
    assert configured.governance_background == ["dispatcher"]
    assert configured.outbox_lease == 45.0
    assert load(PPOS_GOVERNANCE_BACKGROUND="").governance_background == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PPOS_GATEWAYS": "EU=gw:1"}, "not a region name"),
        ({"PPOS_GATEWAYS": "eu-west-1=gateway"}, "not HOST:PORT"),
        ({"PPOS_GATEWAYS": "eu-west-1"}, "NAME=VALUE"),
        ({"PPOS_GOVERNANCE_BACKGROUND": "dispatcher,janitor"}, "janitor"),
        ({"PPOS_OUTBOX_LEASE": "500ms"}, "at least 1s"),
        ({"PPOS_OUTBOX_TARGET_CONCURRENCY": "300"}, "PPOS_OUTBOX_TARGET_CONCURRENCY"),
        ({"PPOS_OUTBOX_BATCH_SIZE": "0"}, "PPOS_OUTBOX_BATCH_SIZE"),
        ({"PPOS_OUTBOX_MAX_ATTEMPTS": "-1"}, "PPOS_OUTBOX_MAX_ATTEMPTS"),
        ({"PPOS_OUTBOX_BACKOFF_BASE": "2m"}, "BACKOFF_BASE"),
        ({"PPOS_RECONCILER_PAGE_SIZE": "5000"}, "PPOS_RECONCILER_PAGE_SIZE"),
        ({"PPOS_ADMIN_JOB_LEASE": "100ms"}, "PPOS_ADMIN_JOB_LEASE"),
        ({"PPOS_OUTBOX_LEASE": "soon"}, "PPOS_OUTBOX_LEASE"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**env)
