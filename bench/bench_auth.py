"""Edge authentication plus one peer hop with a minted, request-bound
PREFLIGHT_JWT, with and without mutual TLS, against the same two hops
plaintext with no authentication at all; and mint/verify cost per token
against bare PyJWT on the same key, and request binding's own cost.

See bench/two_hops.py for how the two hops are driven and measured.
"""

from __future__ import annotations

import secrets
import tempfile
import time
import timeit
from pathlib import Path

import jwt

from bench.harness import Mode, Result
from bench.two_hops import measure, setup_note
from bench.two_hops_server import BACK, ECHO
from ppos.controlplane.security.claims import request_sha256
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier


def _token_costs(result: Result, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ring = KeyRing.from_directory(Path(tmp) / "keys")
    minter = TokenMinter(ring, issuer="ppos-control-plane")
    verifier = TokenVerifier(ring, issuer="ppos-control-plane")
    key = ring.active
    public = key.public_key

    def ours_mint() -> str:
        return minter.mint_preflight(
            subject="ppos.controlplane.bench", audience=BACK, method=ECHO, request_id="req_b"
        )

    claims = {
        "iss": "ppos-control-plane",
        "sub": "s",
        "aud": BACK,
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": secrets.token_hex(16),
        "mth": ECHO,
        "rid": "r",
    }

    def bare_mint() -> str:
        return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})

    token = ours_mint()
    bare_token = bare_mint()

    def ours_verify() -> object:
        return verifier.verify_preflight(token, audience=BACK, method=ECHO)

    def bare_verify() -> object:
        return jwt.decode(bare_token, public, algorithms=["ES256"], audience=BACK)

    def micros(fn: object) -> float:
        # This thread's CPU time, not the wall clock: on a shared machine the wall
        # clock also counts the time other processes held the core.
        timer = timeit.Timer(fn, timer=time.thread_time)  # type: ignore[arg-type]
        return min(timer.repeat(repeat=5, number=rounds)) / rounds * 1e6

    ours_m, bare_m = micros(ours_mint), micros(bare_mint)
    ours_v, bare_v = micros(ours_verify), micros(bare_verify)
    result.figure("mint µs/token (ours)", ours_m, "µs")
    result.figure("mint µs/token (bare PyJWT)", bare_m, "µs")
    result.ratio("mint cost ours/bare", ours_m, bare_m)
    result.figure("verify µs/token (ours, all checks)", ours_v, "µs")
    result.figure("verify µs/token (bare PyJWT decode)", bare_v, "µs")
    result.ratio("verify cost ours/bare", ours_v, bare_v)


def _binding_cost(result: Result, auth_cpu: float, rounds: int) -> None:
    """Request binding's own work on a call: the SHA-256 of the request where the
    token is minted and again at the callee's edge (64-byte body, as driven)."""
    body = b"x" * 64
    timer = timeit.Timer(lambda: request_sha256(body), timer=time.thread_time)
    each = min(timer.repeat(repeat=5, number=rounds)) / rounds * 1e6
    binding = result.figure("request binding µs per call (two SHA-256)", 2 * each, "µs")
    result.ratio("request binding / server CPU per call, auth", binding, auth_cpu)


async def run(mode: Mode) -> Result:
    result = Result("auth", mode)
    seconds, rounds = (1.0, 1) if mode == "smoke" else (3.0, 11)
    modes = ("plain", "auth", "auth-full-verify", "plain-tls", "auth-tls")
    runs = await measure(modes, rounds=rounds, seconds=seconds)
    plain = result.figure("two hops, no auth (calls/s, median)", runs.rate("plain"), "/s")
    authed = result.figure(
        "two hops, edge auth + minted JWT (calls/s, median)", runs.rate("auth"), "/s"
    )
    result.ratio("authenticated / unauthenticated throughput", authed, plain)
    result.target("authenticated / unauthenticated throughput", ">=", 0.75)
    full = result.figure(
        "same, peer edge checks every signature (calls/s, median)",
        runs.rate("auth-full-verify"),
        "/s",
    )
    result.ratio("full-verify / unauthenticated throughput", full, plain)
    tls_plain = result.figure(
        "two hops over mutual TLS, no auth (calls/s, median)", runs.rate("plain-tls"), "/s"
    )
    tls_auth = result.figure(
        "two hops over mutual TLS, edge auth + request-bound JWT (calls/s, median)",
        runs.rate("auth-tls"),
        "/s",
    )
    result.ratio("TLS + auth / plaintext unauthenticated throughput", tls_auth, plain)
    result.target("TLS + auth / plaintext unauthenticated throughput", ">=", 0.6)
    result.ratio("TLS / plaintext throughput, no auth (cost of TLS)", tls_plain, plain)
    result.ratio("TLS + auth / TLS, no auth (cost of auth over TLS)", tls_auth, tls_plain)
    plain_cpu = result.figure("server CPU per call, no auth (median)", runs.cpu("plain"), "µs")
    auth_cpu = result.figure("server CPU per call, auth (median)", runs.cpu("auth"), "µs")
    full_cpu = result.figure(
        "server CPU per call, auth, full verify (median)", runs.cpu("auth-full-verify"), "µs"
    )
    # The server is the bottleneck; calls per CPU-second is its capacity, and unlike
    # wall-clock throughput it does not move with other load on a shared machine.
    result.ratio("authenticated / unauthenticated capacity (CPU/call)", plain_cpu, auth_cpu)
    result.ratio("full-verify / unauthenticated capacity (CPU/call)", plain_cpu, full_cpu)
    tls_cpu = result.figure("server CPU per call, TLS + auth (median)", runs.cpu("auth-tls"), "µs")
    result.ratio("TLS + auth / plaintext unauthenticated capacity (CPU/call)", plain_cpu, tls_cpu)
    _binding_cost(result, auth_cpu, rounds=2000 if mode == "smoke" else 20000)
    # Each mode measured what it says: in `auth` the edge knew (nearly) every peer
    # token as its own, in `auth-full-verify` none, so every signature was checked.
    known = min(*runs.recognised["auth"], *runs.recognised["auth-tls"])
    result.figure("peer tokens known as our own, auth (lowest round)", known * 100, "%")
    result.figure(
        "peer tokens known as our own, auth-full-verify",
        max(runs.recognised["auth-full-verify"]) * 100,
        "%",
    )
    if known < 0.99 or max(runs.recognised["auth-full-verify"]) > 0:
        raise RuntimeError("a mode did not measure what it says (see recognised tokens)")
    _token_costs(result, rounds=200 if mode == "smoke" else 2000)
    result.notes.append(setup_note(rounds, seconds))
    result.notes.append(
        "`auth` is wired as the one-port server wires a peer it hosts: the peer hop "
        "comes back through its own port and the edge knows the tokens its loopback "
        "channel minted, with their claims (SelfMinted): no parse, no signature "
        "check, every check that can still fail; `auth-full-verify` parses and "
        "checks every signature, as a peer in another process must; `*-tls` modes "
        "run the caller's channel, the listener and the peer hop over mutual TLS "
        "(P-256 certificates; the callers' connections are made once, the peer hop's "
        "once per server)"
    )
    return result
