"""Credentials pasted where they do not belong: found in a request before it is read.

An operator who pastes the control token as a reason, or a node credential as
a label, must not have it stored in the audit log, sent to a gateway inside a
command, or echoed in an error. The edge asks `holds_credential` about each
authenticated call's request bytes and metadata (but `authorization`) before
it decodes anything, and refuses with INVALID_ARGUMENT.

What counts as a credential: the control token itself (recognised by its
SHA-256, as the edge recognises it, so no copy of it is kept), anything shaped
like a JWS (node credentials, PREFLIGHT_JWTs, any other bearer JWT), and the
prefixes our token generators use (`ppos_ct_`, `ppos_enroll_`, and
`ppos_op_` of operator credentials). The control token is looked for in every
run of its character set at least as long as it: a window of its length at
each offset near the run's ends, which is where a pasted token sits in the
protobuf bytes (beside a field's tag and length bytes, or free text's spaces
and punctuation).
"""

from __future__ import annotations

import hashlib
import hmac
import re

# Compact JWS: base64url of a JSON object (`{"` encodes as `eyJ`), twice, dotted.
_SHAPES = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.|ppos_(?:ct|enroll|op)_")
# How far from a run's ends a token is looked for (tag and length bytes, quotes...).
_SLACK = 8
# Header values found clean that are remembered: how many, and how long at most.
_CLEAN_VALUES = 256
_CLEAN_VALUE_CHARS = 256


class CredentialScanner:
    """Knows whether some bytes hold a credential; keeps only the token's digest."""

    def __init__(self, control_token: str) -> None:
        self._length = len(control_token)
        self._digest = hashlib.sha256(control_token.encode()).digest()
        # RFC 6750 b64token characters: all a control token may hold.
        self._runs = re.compile(rb"[A-Za-z0-9._~+/=-]{%d,}" % self._length)
        # Header values found clean: a client sends the same user-agent on every
        # call. Not secrets (a value holding a credential is never kept).
        self._clean: set[str | bytes] = set()

    def value_holds_credential(self, value: str | bytes) -> bool:
        """`holds_credential` of a metadata value (text or bytes); the answer for
        a short clean value is remembered, the oldest forgotten all at once."""
        clean = self._clean
        if value in clean:
            return False
        data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        if self.holds_credential(data):
            return True
        if len(value) <= _CLEAN_VALUE_CHARS:
            if len(clean) >= _CLEAN_VALUES:
                clean.clear()
            clean.add(value)
        return False

    def holds_credential(self, data: bytes) -> bool:
        if len(data) < 12:  # shorter than the shortest shape below
            return False
        # Every shape starts with one of these: two substring searches (memchr
        # fast) spare most requests the regular expression.
        if (b"eyJ" in data or b"ppos_" in data) and _SHAPES.search(data) is not None:
            return True
        if len(data) < self._length:  # no run long enough to be the token
            return False
        return any(self._holds_token(run.group()) for run in self._runs.finditer(data))

    def _holds_token(self, run: bytes) -> bool:
        last = len(run) - self._length
        starts = set(range(min(_SLACK, last) + 1)) | set(range(max(0, last - _SLACK), last + 1))
        return any(
            hmac.compare_digest(
                hashlib.sha256(run[start : start + self._length]).digest(), self._digest
            )
            for start in starts
        )
