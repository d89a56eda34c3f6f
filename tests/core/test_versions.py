"""The one check of a write's expected_resource_version."""

from __future__ import annotations

import pytest

from ppos.controlplane.core.errors import InvalidArgument, StaleResourceVersion
from ppos.controlplane.core.versions import check_version, parse_version


def test_a_version_is_ascii_digits_of_at_most_18() -> None:
    assert parse_version("7") == 7
    assert parse_version("9" * 18) == int("9" * 18)
    for text in ("", "9" * 19, "-1", "1.0", "\u0661", "\u00b2", " 7"):
        assert parse_version(text) is None, text


def test_the_current_version_passes_and_an_empty_one_checks_nothing() -> None:
    check_version("node", "node_1", "7", 7)
    check_version("node", "node_1", "", 7)


def test_another_version_is_stale_and_names_both() -> None:
    with pytest.raises(StaleResourceVersion) as caught:
        check_version("tenant", "acme", "6", 7, required=True)
    assert caught.value.reason == "STALE_RESOURCE_VERSION"
    assert caught.value.metadata == {"current_resource_version": "7"}
    assert "not 6" in caught.value.message


def test_a_replacing_write_requires_a_version() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_version("governance policy", "p", "", 3, required=True)
    assert [v.field for v in caught.value.violations] == ["expected_resource_version"]
