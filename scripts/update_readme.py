"""Rewrite the README's generated sections (the configuration table) in place."""

from __future__ import annotations

import re
from pathlib import Path

from ppos.controlplane.core.settings import markdown_table
from ppos.controlplane.runtime.modules import ALL_SECTIONS

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- config-table:start -->\n).*?(<!-- config-table:end -->)", re.S)


def main() -> int:
    text = README.read_text()
    if not BLOCK.search(text):
        raise SystemExit("README.md has no <!-- config-table:start/end --> markers")
    README.write_text(
        BLOCK.sub(lambda m: m.group(1) + markdown_table(ALL_SECTIONS) + m.group(2), text)
    )
    print("README.md configuration table updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
