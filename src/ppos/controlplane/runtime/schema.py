"""The whole schema in one MetaData: every service's tables and storage's own.

It lives in the composition floor because only here may one module know every
service; storage's migrations need no MetaData to upgrade (the revisions say
what to run), and schema comparisons (tests, autogenerate) hand this one in.
"""

from __future__ import annotations

from sqlalchemy import MetaData


def load_all() -> MetaData:
    """Import each service's models (no import-time side effects elsewhere)."""
    from ppos.controlplane.services.governance import models as _governance_models  # noqa: F401
    from ppos.controlplane.services.node_registry import models as _node_models  # noqa: F401
    from ppos.controlplane.services.registry_sync import models as _sync_models  # noqa: F401
    from ppos.controlplane.storage import audit as _audit  # noqa: F401
    from ppos.controlplane.storage import leases as _leases  # noqa: F401
    from ppos.controlplane.storage import operators as _operators  # noqa: F401
    from ppos.controlplane.storage import token_ledger as _ledger  # noqa: F401
    from ppos.controlplane.storage.base import Base

    return Base.metadata
