"""Rewrite the generated configuration table of docs/configuration.md in place."""

from __future__ import annotations

import re
from pathlib import Path

from ppos.controlplane.core.settings import markdown_table
from ppos.controlplane.runtime.modules import ALL_SECTIONS

CONFIG_DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BLOCK = re.compile(r"(<!-- config-table:start -->\n).*?(<!-- config-table:end -->)", re.S)


def main() -> int:
    text = CONFIG_DOC.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{CONFIG_DOC} has no <!-- config-table:start/end --> markers")
    CONFIG_DOC.write_text(
        BLOCK.sub(lambda m: m.group(1) + markdown_table(ALL_SECTIONS) + m.group(2), text)
    )
    print(f"{CONFIG_DOC} configuration table updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
