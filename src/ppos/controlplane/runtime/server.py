"""Composition root: builds every dependency explicitly and runs the gRPC server.

One process hosts any subset of the three services on one port, plus the
public key set, standard health (per service) and server reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.runtime.collector import settle_collector
from ppos.controlplane.runtime.composition import ModuleFactory, default_modules, load_keyring
from ppos.controlplane.runtime.config import StartupError
from ppos.controlplane.runtime.modules import Runtime, ServiceModule, Settings, page_tokens_of
from ppos.controlplane.runtime.observability import (
    MeteredServer,
    MetricsEndpoint,
    auth_failure_hook,
)
from ppos.controlplane.runtime.operators import StoredOperatorLookup
from ppos.controlplane.runtime.reflection import enable_reflection
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.authentication import EdgeAuthenticator
from ppos.controlplane.security.control_token import ControlToken, read_control_token
from ppos.controlplane.security.credential_scan import CredentialScanner
from ppos.controlplane.security.edge import AuthFailureHook, EdgeGuard, GuardedServer
from ppos.controlplane.security.operators import OperatorCredentialCache
from ppos.controlplane.security.peers import PeerDirectory
from ppos.controlplane.security.self_minted import SelfMinted
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier
from ppos.controlplane.services.identity.service import IdentityModule
from ppos.controlplane.services.jwks.service import JwksModule
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.token_ledger import TokenLedger

_log = structlog.get_logger("ppos.server")

SERVER_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Inbound flow-control windows stay at HTTP/2's 64 KiB instead of growing
    # with bandwidth-delay probes: a caller then has at most that much of a
    # request in the server's buffers before its size is judged. With probes,
    # 200 8 MB bodies refused by the receive limit peaked the server at up to
    # +110 MB and sometimes left +140 to +200 MB behind; without, +3 MB. Our
    # requests are small, responses (the client's windows) are unaffected.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.so_reuseport", 0),
    # Connections are told to go (GOAWAY) after 5 minutes, so clients balancing
    # over a headless Service reconnect and spread onto replicas added since;
    # calls and watch streams in flight finish on the old connection.
    ("grpc.max_connection_age_ms", 300_000),
)
KEY_RELOAD_INTERVAL = 10.0


def server_options(access: AccessTable) -> tuple[tuple[str, int], ...]:
    """The gRPC server's options: the transport takes no message larger than the
    largest request any hosted method accepts (the edge holds each method to
    its own limit; see security/access.py)."""
    return (("grpc.max_receive_message_length", access.largest_request_bytes()), *SERVER_OPTIONS)


class ControlPlaneServer:
    """The running process: server, shared runtime and hosted modules."""

    def __init__(
        self,
        settings: Settings,
        *,
        secrets: SecretRegistry | None = None,
        modules: dict[str, ModuleFactory] | None = None,
        on_auth_failure: AuthFailureHook | None = None,
        extra_modules: tuple[ModuleFactory, ...] = (),
        extra_access_rules: tuple[MethodRule, ...] = (),
    ) -> None:
        self.settings = settings
        self.secrets = secrets or SecretRegistry()
        self._factories = modules or default_modules()
        self._on_auth_failure = on_auth_failure
        self._extra_modules = extra_modules
        self._extra_rules = extra_access_rules
        self.port = 0
        self.runtime: Runtime | None = None
        self.modules: list[ServiceModule] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._probe: asyncio.Task[None] | None = None
        self._key_watch: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.metrics: MetricsEndpoint | None = None

    @property
    def address(self) -> str:
        host = self.settings.server.listen.rpartition(":")[0]
        if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - a host to reach, not bind
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def _take_control_token(self) -> tuple[ControlToken, CredentialScanner]:
        """The edge's checks of the control token; after them only digests live on.

        The setting is taken out of the settings every service receives, the log
        redactor keeps a keyed digest, ControlToken and the scanner of pasted
        credentials a SHA-256 digest.
        """
        auth = self.settings.auth
        given = auth.control_token.take() if auth.control_token is not None else None
        token = read_control_token(given, auth.control_token_file)
        self.secrets.add(token)
        return ControlToken(token), CredentialScanner(token)

    async def start(self) -> None:
        started = time.perf_counter()
        settings = self.settings
        self._validate()
        control, scanner = self._take_control_token()
        runtime = self.runtime = await self._build_runtime()
        self.modules = [JwksModule(runtime.keyring), IdentityModule()]
        self.modules += [self._factories[name](runtime) for name in settings.server.services]
        self.modules += [factory(runtime) for factory in self._extra_modules]
        service_names = [name for module in self.modules for name in module.service_names]
        access = AccessTable.from_services(service_names)
        for rule in self._extra_rules:  # services outside our contracts (tests, benchmarks)
            access.add(rule)
        server = grpc.aio.server(options=server_options(access))
        self._register(server, self._edge(access, control, scanner, runtime), service_names)
        await self._bind(server, runtime)
        await self._run(server)
        # What start-up built lives as long as the process: out of the cyclic
        # collector's way, and the collector itself set for many open streams
        # (its passes paused the event loop; see runtime/collector.py).
        settle_collector()
        _log.info(
            "server.started",
            address=self.address,
            services=settings.server.services,
            database=runtime.db.dialect,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            kid=runtime.keyring.active.kid,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _validate(self) -> None:
        settings = self.settings
        for section in (
            settings.server,
            settings.auth,
            settings.node_registry,
            settings.registry_sync,
            settings.governance,
            settings.database_roles,
        ):
            section.validate()
        settings.tls.validate(settings.server.listen)
        settings.server.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def _build_runtime(self) -> Runtime:
        """Keys, tokens, the database (migrated when asked) and the peer channels."""
        settings = self.settings
        keyring = load_keyring(settings)
        keyring.write_jwks(settings.auth.jwks_file or settings.server.data_dir / "jwks.json")
        minter = TokenMinter(
            keyring, issuer=settings.auth.issuer, ttl_seconds=settings.auth.preflight_jwt_ttl
        )
        self_minted = SelfMinted()  # tokens of peer calls that come back to this process
        verifier = TokenVerifier(
            keyring,
            issuer=settings.auth.issuer,
            leeway_seconds=settings.auth.clock_leeway,
            max_node_lifetime=settings.auth.node_credential_ttl,
            self_minted=self_minted,
        )
        db = Database(
            settings.server.resolved_database_url,
            pool_size=settings.server.db_pool_size,
            read_coalesce_window=settings.server.read_coalesce_window,
        )
        if settings.server.migrate_on_start:
            plan = settings.database_roles.role_plan()
            await db.run_in_executor(lambda: migrate.run(db.write_engine, plan))
        peers = PeerDirectory(
            minter,
            {
                s: settings.peers.address_of(s)
                for s in ("governance", "noderegistry", "registrysync")
            },
            self_minted=self_minted,
            tls=settings.tls.client_identity(),
        )
        return Runtime(
            settings=settings,
            db=db,
            keyring=keyring,
            minter=minter,
            verifier=verifier,
            peers=peers,
            secrets=self.secrets,
            shutdown=asyncio.Event(),
            page_tokens=page_tokens_of(keyring),
        )

    def _edge(
        self,
        access: AccessTable,
        control: ControlToken,
        scanner: CredentialScanner,
        runtime: Runtime,
    ) -> EdgeGuard:
        return EdgeGuard(
            access,
            # Named operators: looked up in the database, each answer cached a few
            # seconds (a revoke is seen by every replica within that delay).
            EdgeAuthenticator(
                control, runtime.verifier, OperatorCredentialCache(StoredOperatorLookup(runtime.db))
            ),
            on_auth_failure=auth_failure_hook(self._on_auth_failure),
            ledger=TokenLedger(runtime.db, leeway_seconds=self.settings.auth.clock_leeway),
            scanner=scanner,
        )

    def _register(self, server: grpc.aio.Server, edge: EdgeGuard, names: list[str]) -> None:
        """Every module's handlers, health and reflection, behind the edge and metered."""
        metered = MeteredServer(server)  # outermost: refusals at the edge are counted too
        guarded = GuardedServer(metered, edge)  # every handler passes the edge, open ones too
        for module in self.modules:
            module.register(guarded)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, guarded)
        enable_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), guarded
        )

    async def _bind(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        settings = self.settings
        try:
            self.port = self._add_port(server)
        except RuntimeError:  # grpc's "Failed to bind", with no errno to tell why
            self.port = 0
        if self.port == 0:
            await asyncio.to_thread(runtime.db.close)  # not on db's own pool: close joins it
            raise StartupError(
                f"cannot listen on {settings.server.listen}: the address is in use or unavailable"
            )
        for name in settings.server.services:  # peers hosted here are reached through our port
            if not settings.peers.address_of(name):
                runtime.peers.host_here(name, self.address)
        self._server = server

    async def _run(self, server: grpc.aio.Server) -> None:
        """Serve, start the modules, then report health as readiness is known."""
        await self._set_health(serving=False)  # until the modules run and readiness is known
        await server.start()
        for module in self.modules:
            await module.start()
        serving, problem = await self._check_ready()
        if not serving:
            _log.warning("health.changed", serving=serving, problem=problem)
        await self._set_health(serving=serving)
        self._probe = asyncio.create_task(self._probe_health(serving), name="health-probe")
        self._key_watch = asyncio.create_task(self._watch_keys(), name="key-reload")
        if self.settings.server.metrics_listen:
            self.metrics = MetricsEndpoint(self.settings.server.metrics_listen)
            self.metrics.start()

    def _add_port(self, server: grpc.aio.Server) -> int:
        tls = self.settings.tls.server_identity()
        if tls is None:
            return server.add_insecure_port(self.settings.server.listen)
        return server.add_secure_port(self.settings.server.listen, tls.credentials())

    async def _set_health(self, *, serving: bool) -> None:
        assert self._health is not None
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set("", status)
        for module in self.modules:
            for name in module.service_names:
                await self._health.set(name, status)

    async def _check_ready(self) -> tuple[bool, str]:
        """Ready means: database reachable and every migration applied."""
        assert self.runtime is not None
        db = self.runtime.db
        try:
            await db.run_in_executor(db.ping)
            missing = await db.run_in_executor(lambda: migrate.pending(db.read_engine))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return False, f"database unreachable: {type(exc).__name__}"
        return not missing, f"migrations pending: {sorted(missing)}" if missing else ""

    async def _probe_health(self, serving: bool) -> None:
        """Health follows real readiness: database reachable, schema current."""
        while True:
            await asyncio.sleep(self.settings.server.health_probe_interval)
            healthy, problem = await self._check_ready()
            if healthy != serving:
                serving = healthy
                _log.warning("health.changed", serving=serving, problem=problem)
                await self._set_health(serving=serving)

    def reload_keys(self) -> bool:
        """Pick up a key rotation made in the key directory; republish the JWKS."""
        assert self.runtime is not None
        changed = self.runtime.keyring.reload_if_changed()
        if changed:
            auth = self.settings.auth
            self.runtime.keyring.write_jwks(
                auth.jwks_file or self.settings.server.data_dir / "jwks.json"
            )
            _log.info("keys.reloaded", kid=self.runtime.keyring.active.kid)
        return changed

    async def _watch_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_RELOAD_INTERVAL)
            try:
                self.reload_keys()
            except Exception:  # noqa: BLE001 - keep serving with the keys in force
                _log.exception("keys.reload_failed")

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish within `grace`, end streams."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.settings.server.shutdown_grace if grace is None else grace
        _log.info("server.stopping", grace_seconds=grace)
        assert self.runtime is not None
        for task in (self._probe, self._key_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        self.runtime.shutdown.set()  # streams end themselves with UNAVAILABLE
        for module in reversed(self.modules):
            await module.stop()
        await self._server.stop(grace)
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        await self.runtime.peers.close()
        await asyncio.to_thread(self.runtime.db.close)
        self._stopped.set()
        _log.info("server.stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
