"""Resource versions: the `expected_resource_version` of a write, read and checked.

A resource version is shown as the decimal text of a counter; a caller hands it
back as `expected_resource_version` to say "write only if nothing changed since I
read it". Handlers validate the text with `Violations.resource_version` (the
field's rule lives in core.validation) and check it against the stored counter
here, inside the write's transaction.
"""

from __future__ import annotations

from ppos.controlplane.core.errors import InvalidArgument, StaleResourceVersion
from ppos.controlplane.core.validation import RESOURCE_VERSION

FIELD = "expected_resource_version"


def parse_version(text: str) -> int | None:
    """The counter `text` names (ASCII digits, at most 18); None for anything else."""
    return int(text) if RESOURCE_VERSION.accepts(text) else None


def check_version(
    resource_type: str, name: str, expected: str, current: int, *, required: bool = False
) -> None:
    """Refuse a write naming a version other than the current one (nothing changes).

    `expected` is the caller's text, already validated; empty means "no check",
    which only the writes that replace a whole resource refuse (`required`).
    """
    if not expected:
        if required:
            raise InvalidArgument.single(
                FIELD, "is required: read the resource and pass its meta.resource_version"
            )
        return
    if parse_version(expected) != current:
        raise StaleResourceVersion(resource_type, name, expected, str(current))
