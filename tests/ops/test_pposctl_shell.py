"""pposctl as a shell tool: --help on every command, completion scripts that bash
really completes with, and the console script run as a process."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from ppos.controlplane.cli.completion import tree
from ppos.controlplane.cli.main import build_parser
from ppos.controlplane.cli.output import Column, Output, make_console
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


def all_parsers() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                canonical = {choice.dest for choice in action._choices_actions}
                for name, child in action.choices.items():
                    if name in canonical:
                        walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def test_every_flag_and_argument_has_help_text() -> None:
    missing = [
        (" ".join(path), action.option_strings or action.dest)
        for path, parser in all_parsers()
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_one_spelling_per_concept_the_old_ones_hidden() -> None:
    flags = {
        path: {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        for path, parser in all_parsers()
    }
    # How long work on a node gets: --deadline, for drain and re-image alike.
    assert "--deadline" in flags[("nodes", "drain")] & flags[("nodes", "reimage")]
    assert "--grace" not in flags[("nodes", "drain")]
    # A queue's capacity: --capacity N, creating or resizing.
    assert "--capacity" in flags[("queues", "create")] & flags[("queues", "resize")]
    # A repeat-safe write: --request-id, wherever one can be repeated.
    for path in [("nodes", "reimage"), ("queues", "create"), ("admin-jobs", "start")]:
        assert "--request-id" in flags[path], path
    assert "--idempotency-key" not in flags[("nodes", "reimage")]
    # A synced job: --job [REGION/]JOB in filters; resuming after a position: --after.
    for path in [("sync", "jobs", "list"), ("decisions", "list"), ("policies", "dry-run")]:
        assert "--job" in flags[path], path
    for path in [("nodes", "watch"), ("audit", "watch"), ("audit", "list")]:
        assert "--after" in flags[path], path
    # Every list merges all pages unless --limit says otherwise.
    lists = [path for path in flags if path[-1:] == ("list",)]
    assert len(lists) >= 13
    for path in lists:
        assert "--limit" in flags[path], path


def test_wide_tables_are_never_cut_into_a_pipe() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(make_console(stdout), make_console(stderr), "wide")
    long_cell = "x" * 700
    columns = [
        Column("NAME", lambda r: r[0]),
        Column("AFTER", lambda r: r[1], wide=True),
        Column("LAST", lambda r: r[2]),
    ]
    out.table(columns, [("a", long_cell, "end"), ("bb", "two\nlines", "end")])
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 3  # a header and one line per row, whatever the width
    assert lines[0].split() == ["NAME", "AFTER", "LAST"]
    assert lines[1].split() == ["a", long_cell, "end"]
    assert lines[2].split() == ["bb", "two", "lines", "end"]
    assert all(line == line.rstrip() for line in lines)


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
    # Old spellings still work but are not offered.
    assert complete(bash_script, "pposctl nodes drain --gr") == []
    assert complete(bash_script, "pposctl nodes drain --dea") == ["--deadline"]


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
