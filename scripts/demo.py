"""`make demo`: the control plane serving on embedded SQLite in .demo/.

Generates a control token file on first run (never printed), then serves all
three services on 127.0.0.1:50051 until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".demo"
BIN = Path(sys.executable).parent


def main() -> int:
    DATA.mkdir(exist_ok=True)
    token_file = DATA / "control-token"
    if not token_file.exists():
        subprocess.run(
            [str(BIN / "ppos-control-plane"), "token", "generate", "--out", str(token_file)],
            check=True,
        )
    env = {
        **os.environ,
        "PPOS_DATA_DIR": str(DATA),
        "PPOS_CONTROL_TOKEN_FILE": str(token_file),
        "PPOS_LOG_FORMAT": os.environ.get("PPOS_LOG_FORMAT", "console"),
    }
    print(
        f"control plane on 127.0.0.1:50051 (SQLite in {DATA}); in another shell:\n"
        f"  export PPOS_CONTROL_TOKEN=$(cat {token_file})\n"
        "  .venv/bin/grpcurl -plaintext 127.0.0.1:50051 list\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        return subprocess.call([str(BIN / "ppos-control-plane"), "serve"], env=env)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
