"""docs/operator-guide.md, run as written: every ```bash and ```python block, in
order, in one fresh shell (no PPOS_* variables, no venv on PATH until the guide
puts it there) against `make demo`.

The only change to the text: the demo's port 50051 becomes a free one (the
guide's `make demo` reads it from DEMO_PORT), so the test never reaches someone
else's demo. Annotations the test understands:

- `# runs until Ctrl-C; ready when it prints "TEXT"` at the end of a command:
  started in the background (its own process group), the next command waits
  for TEXT in its output; at the end it gets SIGINT, as from Ctrl-C;
- `<!-- not run by the guide's test: REASON -->` before a block: not run (a
  Docker engine, a Kubernetes cluster); the reason is required.
A failing command fails the test (`set -e`); failures the guide shows on
purpose are written `command || echo "exit code $?"`.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.support.external import ROOT, run

pytestmark = [pytest.mark.interop, pytest.mark.slow]

GUIDE = ROOT / "docs" / "operator-guide.md"
FENCE = re.compile(r"(?:<!-- (not run by the guide's test:[^>]*)-->\s*)?```(\w*)\n(.*?)```", re.S)
LONG_RUNNING = re.compile(r'^(.*?)\s*# runs until Ctrl-C; ready when it prints "([^"]+)"\s*$')
LINKED = ["Makefile", "pyproject.toml", "package.json", "package-lock.json", "scripts", "tests"]
LINKED += [".venv", "node_modules"]


def blocks() -> list[tuple[str, str, str]]:
    """(language, text, skip reason) of every fenced block, in order."""
    return [
        (lang, text, (skip or "").strip()) for skip, lang, text in FENCE.findall(GUIDE.read_text())
    ]


def logical_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined."""
    out: list[str] = []
    for line in text.splitlines():
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1] + "\n" + line
        else:
            out.append(line)
    return out


def shell_script(port: int) -> str:
    parts = [
        "set -eo pipefail -m",  # -m: each background command gets its own process group
        "BACKGROUND=()",
        'stop_background() { for pid in "${BACKGROUND[@]}"; do kill -INT -- -$pid || true; '
        'done; for pid in "${BACKGROUND[@]}"; do wait $pid || true; done; }',
        "trap stop_background EXIT",
    ]
    background = 0
    for number, (lang, text, skip) in enumerate(blocks(), start=1):
        if skip:
            assert skip.removeprefix("not run by the guide's test:").strip(), "say why"
            continue
        text = text.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
        parts.append(f"echo '### guide block {number}' >&2")
        if lang == "python":
            parts.append(f"python - <<'GUIDE_PYTHON'\n{text}GUIDE_PYTHON")
            continue
        assert lang == "bash", f"block {number}: ```{lang}: bash, python or a skip reason"
        for line in logical_lines(text):
            match = LONG_RUNNING.match(line)
            if match is None:
                parts.append(line)
                continue
            background += 1
            log = f".guide-background-{background}.log"
            parts.append(f"( {match.group(1)} ) > {log} 2>&1 &")
            parts.append("BACKGROUND+=($!)")
            parts.append(
                f'timeout 300 bash -c \'until grep -qF -- "{match.group(2)}" {log}; '
                f"do sleep 1; done' || {{ cat {log} >&2; exit 1; }}"
            )
    return "\n".join(parts) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_guide_says_why_it_skips_what_it_skips() -> None:
    skipped = [skip for _, _, skip in blocks() if skip]
    assert len(skipped) == 4  # services apart, compose with mTLS, Docker, Kubernetes
    assert all(len(reason) > len("not run by the guide's test:") + 5 for reason in skipped)
    languages = {lang for lang, _, skip in blocks() if not skip}
    assert languages == {"bash", "python"}


async def test_every_command_of_the_guide_runs_against_the_demo(tmp_path: Path) -> None:
    # What `make demo` would build first (the guide's venv and node_modules are linked).
    setup = await run(
        "make",
        "-C",
        str(ROOT),
        ".venv/.installed-stamp",
        "node_modules/.installed-stamp",
        limit=600,
    )
    assert setup.code == 0, setup.stdout + setup.stderr
    workdir = tmp_path / "repo"
    workdir.mkdir()
    for name in LINKED:
        (workdir / name).symlink_to(ROOT / name)
    port = free_port()
    (workdir / "guide.sh").write_text(shell_script(port))
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "DEMO_PORT": str(port),
        "DEMO_PORTAL_PORT": "0",  # any free port: the guide does not use the portal
    }
    done = await run(
        "env", "-i", *(f"{k}={v}" for k, v in env.items()),
        "bash", "--noprofile", "--norc", "-c", f"cd {workdir} && bash guide.sh",
        limit=900,
    )  # fmt: skip
    output = done.stdout + done.stderr
    demo_log = (workdir / ".guide-background-1.log").read_text()
    agent_log = (workdir / ".guide-background-2.log").read_text()
    assert done.code == 0, f"{output[-6000:]}\n--- demo:\n{demo_log[-3000:]}"
    token = (workdir / ".demo" / "control-token").read_text().strip()
    for text in (output, demo_log, agent_log):
        assert token not in text, "the control token was printed"
    assert "Everything is running" in demo_log
    assert "stopped cleanly" in demo_log  # Ctrl-C at the end stopped the demo cleanly
    # Reflection, the token, rich errors.
    assert "grpc.health.v1.Health.Check is a method" in output
    assert "google.rpc.BadRequest is a message" in output
    assert "missing credential" in output
    assert '"enrollment_token": "ppos_enroll_' in output  # grpcurl: the .proto field names
    assert '"enrollmentToken": "ppos_enroll_' in output  # buf curl: the JSON names
    assert "Error from server (NotFound): node 'node_does_not_exist' not found" in output
    # The agent's node: READY, re-imaged to 15.3.0, a failed re-image (exit 14).
    assert "READY (HeartbeatReady)" in agent_log
    assert "SUCCEEDED: now running registry.printprice.example/preflight-engine:15.3.0" in agent_log
    assert "FAILED: simulated failure" in agent_log
    assert "exit code 14" in output
    # The grpcurl node and governance.
    assert (workdir / "node-2.json").stat().st_mode & 0o777 == 0o600
    assert "tenant/acme" in output or "acme" in output
    assert "WATCH_EVENT_TYPE_SNAPSHOT_END" in output
