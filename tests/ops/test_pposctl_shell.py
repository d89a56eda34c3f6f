"""pposctl as a shell tool: --help on every command, completion scripts that bash
really completes with, and the console script run as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ppos.controlplane.cli.completion import tree
from ppos.controlplane.cli.main import build_parser
from tests.ops.support import pposctl_sync

PPOSCTL = str(Path(sys.executable).parent / "pposctl")


def all_commands() -> list[tuple[str, ...]]:
    return sorted(tree(build_parser()))


def test_every_command_has_help_and_exits_0() -> None:
    commands = all_commands()
    assert len(commands) > 80
    for path in commands:
        result = pposctl_sync([*path, "--help"], {})
        assert result.code == 0, path
        assert result.stdout.startswith("usage: pposctl"), path
        assert "--output" in result.stdout, path  # global flags everywhere


def complete(script: str, words: str) -> list[str]:
    """What bash offers after `words` (the last word is being completed)."""
    parts = words.split(" ")
    program = f"""
{script}
COMP_WORDS=({" ".join(repr(p) for p in parts)})
COMP_CWORD={len(parts) - 1}
_pposctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    result = pposctl_sync(["completion", "bash"], {})
    assert result.code == 0
    return result.stdout


def test_bash_completes_nouns_verbs_flags_and_values(bash_script: str) -> None:
    nouns = complete(bash_script, "pposctl ")
    assert {"nodes", "tenants", "sync", "admin-jobs", "audit", "policies"} <= set(nouns)
    assert complete(bash_script, "pposctl no") == ["nodes"]  # aliases work, are not offered
    assert "cordon" in complete(bash_script, "pposctl node ")
    assert set(complete(bash_script, "pposctl nodes ")) >= {
        "list",
        "get",
        "cordon",
        "uncordon",
        "drain",
        "reimage",
        "watch",
        "sweep",
    }
    assert complete(bash_script, "pposctl nodes cordon --re") == ["--reason"]
    assert complete(bash_script, "pposctl -o json nodes dr") == ["drain"]
    assert complete(bash_script, "pposctl nodes list -o ") == ["table", "wide", "json", "name"]
    assert set(complete(bash_script, "pposctl sync sweep ")) >= {"start", "get", "cancel", "wait"}
    assert complete(bash_script, "pposctl policies dry") == ["dry-run"]


def test_zsh_script_loads_the_bash_completion() -> None:
    result = pposctl_sync(["completion", "zsh"], {})
    assert result.code == 0
    assert "bashcompinit" in result.stdout
    assert "complete -o default -F _pposctl pposctl" in result.stdout


def test_console_script_runs_as_a_process() -> None:
    done = subprocess.run(
        [PPOSCTL, "version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("pposctl ")
    bad = subprocess.run(
        [PPOSCTL, "nodes", "list", "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert "invalid choice: 'yaml'" in bad.stderr
