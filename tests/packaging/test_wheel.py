"""`pip install .` works from outside the repository, with namespaced imports only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_imports_from_elsewhere(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("ppos_control_plane-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"ppos", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "ppos/controlplane/noderegistry/v1/node_registry_service_pb2.py" in names
    assert "ppos/controlplane/noderegistry/v1/node_registry_service_pb2.pyi" in names
    assert "ppos/controlplane/security/edge.py" in names
    assert "ppos/controlplane/storage/migrations/env.py" in names
    assert not any(name.startswith(("src/", "gen/", "clients/")) for name in names)
    assert "ppos/__init__.py" not in names, "ppos must stay a namespace package"

    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import ppos.controlplane.runtime.cli as cli, ppos.controlplane.noderegistry.v1 as v1;"
        "assert cli.__file__.startswith(sys.argv[1]), cli.__file__;"
        "assert v1.__file__.startswith(sys.argv[1]), v1.__file__;"
        "import ppos.controlplane.storage.migrate as m; assert m.MIGRATIONS.exists();"
        "print('ok')"
    )
    # -S: no site-packages .pth (our editable install), so only the wheel can answer;
    # dependencies come from the venv's site-packages added explicitly.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.append({site!r}); " + probe,
            str(target),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
