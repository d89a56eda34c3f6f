"""Every RPC of the three services (and GetJwks, health) under a structure-aware
fuzzer, through a real server on each database, as no one, as a node and as an
operator.

What must hold for every reply: never INTERNAL or UNKNOWN, at most 8 KB of
trailing metadata, no text naming a Python class, source file, SQL or the
database drivers, no answer but a refusal to a caller the method does not allow;
afterwards the server is SERVING and nothing a refused request sent changed
anything (see tests/fuzz/campaign.py). A failure prints the deduplicated list
(method, code, what, the first 200 characters of the message).

PPOS_FUZZ_SEED picks another sequence of cases (default 18); `python -m bench
fuzz` runs the same campaign with 20,000 requests per database.
"""

from __future__ import annotations

import os

from tests.fuzz.campaign import run_campaign
from tests.support.servers import RunningPlane

REQUESTS = 1000
SEED = int(os.environ.get("PPOS_FUZZ_SEED", "18"))


async def test_no_request_breaks_the_server(fuzz_plane: RunningPlane, backend: str) -> None:
    report = await run_campaign(
        address=fuzz_plane.address,
        operator=fuzz_plane.operator,
        database_url=fuzz_plane.database_url,
        requests=REQUESTS,
        seed=SEED,
        tag=backend,
    )
    print(f"\nfuzz on {backend} (seed {SEED}):\n{report.summary()}")
    assert report.requests >= 1000
    assert not report.failures, report.summary()
