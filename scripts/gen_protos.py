"""Regenerate gen/ from protos/: Python messages, gRPC stubs and .pyi stubs.

The one way gen/ is produced. Run with the pinned codegen extras installed
(`pip install -e '.[codegen]'`); CI runs it and fails on any diff.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"


def _plugin(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise SystemExit(f"{name} not found next to {sys.executable}; install '.[codegen]'")
    return path


def main() -> int:
    if (GEN / "ppos").exists():
        shutil.rmtree(GEN / "ppos")
    GEN.mkdir(exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        f"--mypy_out={GEN}",
        f"--mypy_grpc_out={GEN}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        return int(code)
    # Each versioned package is a regular package; the folders above it stay
    # PEP 420 namespaces shared with src/ and clients/.
    for version_dir in sorted({p.parent for p in GEN.rglob("*_pb2.py")}):
        (version_dir / "__init__.py").write_text('"""Generated from protos/. Do not edit."""\n')
        (version_dir / "py.typed").write_text("")
    print(f"generated {len(sources)} proto files into {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
