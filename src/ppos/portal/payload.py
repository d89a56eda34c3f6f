"""Exact bytes shown to people: a highlighted JSON view that never parses, and hex.

A canonical payload must be shown as it is: `1e400`, a 30-digit integer and a
repeated key are what the engine wrote, and a JSON parser (the browser's
`JSON.parse`, Python's `json`) would turn them into `Infinity`, a rounded float and
one key. So the view is made by a lexer over the raw text: each token is wrapped
in a span by its kind and escaped, nothing is decoded, reordered or dropped. The
text content of the view is the payload's text, character for character.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from markupsafe import Markup, escape

# One alternative per token kind; the last one takes any other character, so the
# tokens always cover the text exactly (invalid JSON is shown, not refused).
_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"?)
      |(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      |(?P<literal>true|false|null)
      |(?P<punct>[{}\[\]:,])
      |(?P<space>[ \t\r\n]+)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_KEY_AFTER = re.compile(r"[ \t\r\n]*:")
# Characters that change how surrounding text is displayed or are invisible:
# C0/C1 controls (other than the JSON whitespace), bidi embeddings, overrides and
# isolates, zero-width characters. They stay in the text, marked, so they show.
_SUSPECT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


@dataclass(frozen=True)
class PayloadView:
    """What the payload page shows of one payload."""

    html: Markup
    text_is_exact: bool  # False when the bytes are not UTF-8 (the text view replaces)
    size: int
    sha256: str
    hex_lines: list[str]


def _marked(text: str) -> Markup:
    """Escaped `text` with suspect characters kept but wrapped so they are visible."""
    parts: list[str] = []
    last = 0
    for match in _SUSPECT.finditer(text):
        parts.append(str(escape(text[last : match.start()])))
        char = match.group()
        parts.append(f'<span class="ctl" title="U+{ord(char):04X}">{escape(char)}</span>')
        last = match.end()
    parts.append(str(escape(text[last:])))
    return Markup("".join(parts))  # noqa: S704 - every piece was escaped above


def highlight_json(text: str) -> Markup:
    """`text` as spans by token kind; the concatenated text of the spans is `text`."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        token = match.group()
        if kind == "space":
            out.append(str(escape(token)))
        elif kind == "string":
            css = "j-key" if _KEY_AFTER.match(text, match.end()) else "j-str"
            out.append(f'<span class="{css}">{_marked(token)}</span>')
        else:
            out.append(f'<span class="j-{kind}">{_marked(token)}</span>')
    return Markup("".join(out))  # noqa: S704 - every token was escaped above


def hex_dump(data: bytes, *, width: int = 16, limit: int = 64 * 1024) -> list[str]:
    """`offset  hex bytes  |ascii|` lines of the first `limit` bytes."""
    lines = []
    for offset in range(0, min(len(data), limit), width):
        chunk = data[offset : offset + width]
        hexed = " ".join(f"{byte:02x}" for byte in chunk).ljust(width * 3 - 1)
        shown = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hexed}  |{shown}|")
    return lines


def view_payload(data: bytes) -> PayloadView:
    try:
        text, exact = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, exact = data.decode("utf-8", errors="replace"), False
    return PayloadView(
        html=highlight_json(text),
        text_is_exact=exact,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        hex_lines=hex_dump(data),
    )
