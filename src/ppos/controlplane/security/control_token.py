"""The operator's control token: checked in constant time, then forgotten.

Only a SHA-256 digest of the token is kept in memory after start-up, and the
log redactor is given it to keep a keyed digest of, so no line can print it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from ppos.controlplane.core.settings import ConfigError

MIN_LENGTH = 32
# RFC 6750 b64token characters: it travels in an HTTP/2 header.
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


class ControlToken:
    """Knows whether a presented value is the control token, nothing more."""

    def __init__(self, token: str) -> None:
        problem = control_token_problem(token)
        if problem:
            raise ConfigError(f"control token: {problem}")
        self._digest = hashlib.sha256(token.encode()).digest()

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._digest)


def control_token_problem(token: str) -> str | None:
    if len(token) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if not _TOKEN_CHARS.fullmatch(token):
        return "may hold only letters, digits and . _ ~ + / = -"
    return None


def read_control_token(value: str | None, path: Path | None) -> str:
    """The token from the environment value or the file (one trailing newline allowed)."""
    if value and path:
        raise ConfigError("set PPOS_CONTROL_TOKEN or PPOS_CONTROL_TOKEN_FILE, not both")
    if path is not None:
        try:
            value = path.read_text().removesuffix("\n")
        except OSError as exc:
            raise ConfigError(
                f"PPOS_CONTROL_TOKEN_FILE: cannot read {path}: {exc.strerror}"
            ) from None
    if not value:
        raise ConfigError(
            "no control token: set PPOS_CONTROL_TOKEN_FILE (or PPOS_CONTROL_TOKEN); "
            "`ppos-control-plane token generate --out FILE` writes a strong one"
        )
    return value


def generate_control_token() -> str:
    return "ppos_ct_" + secrets.token_urlsafe(32)
