"""The browser libraries the pages use, served by the portal itself (never a CDN).

They come from npm (package.json) and are read from a `node_modules` folder: the one
named by `PPOS_PORTAL_ASSETS`, else the first found walking up from this package
(the repository's, in a checkout or an editable install). Only the files listed
here are served.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_ASSETS = "PPOS_PORTAL_ASSETS"
VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "sse.min.js": "htmx-ext-sse/dist/sse.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}


def find_node_modules(environ: dict[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    named = env.get(ENV_ASSETS)
    if named:
        return Path(named)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "node_modules"
        if (candidate / VENDOR_FILES["htmx.min.js"]).is_file():
            return candidate
    return None


def vendor_path(node_modules: Path | None, name: str) -> Path | None:
    """The file served as `/static/vendor/<name>`, if it is one of ours and present."""
    relative = VENDOR_FILES.get(name)
    if node_modules is None or relative is None:
        return None
    path = node_modules / relative
    return path if path.is_file() else None


def missing_assets(node_modules: Path | None) -> list[str]:
    return [name for name in VENDOR_FILES if vendor_path(node_modules, name) is None]
