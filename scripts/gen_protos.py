"""Regenerate gen/ from protos/: Python messages, gRPC stubs and .pyi stubs.

The one way gen/ is produced. Run with the pinned codegen extras installed
(`pip install -e '.[codegen]'`); CI runs it and fails on any diff.
`gen_protos.py --out DIR` writes into DIR instead (the check compares a fresh
copy there, so gen/ never changes under running processes).
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=GEN, help="directory to write (default gen/)")
    out = parser.parse_args().out.resolve()
    if (out / "ppos").exists():
        shutil.rmtree(out / "ppos")
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        return int(code)
    # Each versioned package is a regular package; the folders above it stay
    # PEP 420 namespaces shared with src/ and clients/.
    for version_dir in sorted({p.parent for p in out.rglob("*_pb2.py")}):
        (version_dir / "__init__.py").write_text('"""Generated from protos/. Do not edit."""\n')
        (version_dir / "py.typed").write_text("")
    print(f"generated {len(sources)} proto files into {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
