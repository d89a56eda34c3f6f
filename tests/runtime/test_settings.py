"""Settings: flags beat environment beat defaults; every setting is documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ppos.controlplane.core.settings import (
    ConfigError,
    add_arguments,
    load_section,
    markdown_table,
    parse_duration,
    parse_mapping,
)
from ppos.controlplane.runtime.cli import load_settings
from ppos.controlplane.runtime.config import ServerSettings
from ppos.controlplane.runtime.modules import ALL_SECTIONS

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_arguments(parser, ServerSettings)
    return parser.parse_args(argv)


def test_flag_beats_environment_beats_default() -> None:
    env = {"PPOS_LISTEN": "127.0.0.1:6000", "PPOS_LOG_LEVEL": "warning"}
    settings = load_section(ServerSettings, _parse(["--listen", "127.0.0.1:7000"]), env)
    assert settings.listen == "127.0.0.1:7000"
    assert settings.log_level == "warning"
    assert settings.shutdown_grace == 10


def test_typed_values() -> None:
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("5m") == 300
    assert parse_duration("2d") == 172800
    assert parse_mapping("eu-west-1=10.0.0.1:7001, us-east-1=10.0.0.2:7001") == {
        "eu-west-1": "10.0.0.1:7001",
        "us-east-1": "10.0.0.2:7001",
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_mapping("eu-west-1")
    settings = load_settings(None, {"PPOS_SERVICES": "noderegistry, governance"})
    assert settings.server.services == ["noderegistry", "governance"]


def test_bad_values_name_their_setting() -> None:
    with pytest.raises(ConfigError, match="PPOS_DB_POOL_SIZE"):
        load_settings(None, {"PPOS_DB_POOL_SIZE": "many"})
    with pytest.raises(ConfigError, match="PPOS_READ_COALESCE_WINDOW"):
        load_settings(None, {"PPOS_READ_COALESCE_WINDOW": "5s"}).server.validate()
    assert load_settings(None, {}).server.read_coalesce_window == pytest.approx(0.002)
    assert load_settings(None, {"PPOS_READ_COALESCE_WINDOW": "0s"}).server.read_coalesce_window == 0


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(None, {"PPOS_DATA_DIR": str(tmp_path)})
    assert settings.server.resolved_database_url == f"sqlite:///{tmp_path / 'control-plane.db'}"


def test_secrets_have_no_flag() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for section in ALL_SECTIONS:
        add_arguments(parser, section)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert "--control-token" not in flags
    assert "--control-token-file" in flags


def test_the_configuration_doc_documents_every_setting() -> None:
    table = markdown_table(ALL_SECTIONS)
    assert table in CONFIG_DOC.read_text(), (
        "docs/configuration.md's table is stale: run scripts/update_config_table.py"
    )
