"""One node agent: enroll once, register, then heartbeat and work until stopped.

The loop ticks a few times a second; each tick heartbeats when due, moves
the re-image in progress along, sends a report the control plane has not yet
taken, and renews the credential when due. A tick that cannot reach the
control plane (a restart, a network cut) waits with exponential backoff and
full jitter, then the same node carries on: its registration and its
credential live in the control plane's database, so nothing is registered
twice and nothing is lost but heartbeats.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from ppos.controlplane.client import (
    AbortedError,
    ControlPlaneError,
    DeadlineExceededError,
    FailedPreconditionError,
    NodeAgentClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.nodeagent.identity import Identity, IdentityStore
from ppos.nodeagent.reimage import Reimage, fails

TRANSIENT = (UnavailableError, DeadlineExceededError, AbortedError, ResourceExhaustedError)
TICK = 0.25  # seconds between looks at the work in progress
DEFAULT_INTERVAL = 10.0


class AgentStopped(Exception):
    """The agent cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class AgentOptions:
    """What the node is and how the agent behaves."""

    region: str
    image: str
    digest: str = ""
    cluster: str = ""
    capacity_slots: int = 4
    labels: Mapping[str, str] = field(default_factory=dict)
    hostname: str = ""
    reimage_seconds: float = 3.0
    fail_images: tuple[str, ...] = ()  # re-images to matching images fail (simulated)
    renew_fraction: float = 0.5  # renew once this share of the credential's life has passed
    renew_every: float | None = None  # or this often (demos, tests)
    heartbeat_interval: float | None = None  # instead of the control plane's
    max_backoff: float = 10.0
    not_ready_file: Path | None = None  # while it exists: NOT_READY, its text the reason


def _seconds(value: object) -> float:
    return float(getattr(value, "seconds", 0)) + float(getattr(value, "nanos", 0)) / 1e9


CommandState: TypeAlias = node_pb2.NodeCommandState.ValueType


def _readiness_name(value: node_pb2.Readiness.ValueType) -> str:
    return node_pb2.Readiness.Name(value).removeprefix("READINESS_")


def _state_name(value: CommandState) -> str:
    return node_pb2.NodeCommandState.Name(value).removeprefix("NODE_COMMAND_STATE_")


class NodeAgent:
    """A worker node's side of the node registry, for one node."""

    def __init__(
        self,
        client: NodeAgentClient,
        options: AgentOptions,
        *,
        store: IdentityStore,
        enrollment_token: Callable[[], str] | None = None,
        say: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.store = store
        self._enrollment_token = enrollment_token
        self._say = say
        self.stop = stop or threading.Event()
        self.identity: Identity | None = None
        self.container = node_pb2.ContainerVersion(image=options.image, digest=options.digest)
        self.readiness = ""
        self.interval = options.heartbeat_interval or DEFAULT_INTERVAL
        self.work: Reimage | None = None
        self.pending_report: tuple[str, CommandState, str] | None = None
        self._next_heartbeat = 0.0  # monotonic time of the next heartbeat
        self.handled: set[str] = set()
        self.failures = 0  # consecutive ticks that could not reach the control plane
        self.renewals = 0

    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity else ""

    def say(self, text: str) -> None:
        self._say(f"{self.node_id or 'enrolling'} {self.options.region}: {text}")

    # -- start-up ----------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped: 0, or 3 when the agent cannot go on."""
        try:
            self._retrying(self._start)
            while not self.stop.is_set():
                self._retrying(self._tick)
                self.stop.wait(TICK)
        except AgentStopped as exc:
            self.say(f"stopped: {exc}")
            return 3
        if self.work is not None:
            self.say(f"stopped during re-image {self.work.command_id} (it will time out)")
        return 0

    def _start(self) -> None:
        if self.identity is None:
            self.identity = self.store.load()
            if self.identity is None:
                self._enroll()
            else:
                self.client.credential = self.identity.credential
                self.client.node_id = self.identity.node_id
                self.say("identity read back: carrying on as the same node")
        reply = self.client.register(
            region=self.options.region,
            cluster=self.options.cluster,
            image=self.container.image,
            digest=self.container.digest,
            capacity_slots=self.options.capacity_slots,
            labels=self.options.labels,
        )
        self._settings(reply.heartbeat)
        self.say(
            f"registered {self.container.image}@{self.container.digest or '-'}, "
            f"heartbeat every {self.interval:g}s"
        )
        self._heartbeat()

    def _enroll(self) -> None:
        if self._enrollment_token is None:
            raise AgentStopped("no identity and no enrollment token to redeem")
        try:
            reply = self.client.enroll(self._enrollment_token(), hostname=self.options.hostname)
        except (UnauthenticatedError, FailedPreconditionError) as exc:
            raise AgentStopped(f"enrollment refused: {exc} (ask for a new token)") from None
        self._keep(reply.node_id, reply.node_credential, reply.credential_expire_time)
        self.say("enrolled")

    def _keep(self, node_id: str, credential: str, expire_time: object) -> None:
        self.identity = Identity(node_id, credential, _seconds(expire_time), time.time())
        self.store.save(self.identity)

    def _settings(self, heartbeat: node_pb2.HeartbeatSettings) -> None:
        if self.options.heartbeat_interval is None and heartbeat.HasField("interval"):
            self.interval = _seconds(heartbeat.interval) or DEFAULT_INTERVAL

    # -- the loop ----------------------------------------------------------------

    def _retrying(self, step: Callable[[], None]) -> None:
        """Run `step`; while the control plane cannot be reached, back off and run it again."""
        while not self.stop.is_set():
            try:
                step()
            except TRANSIENT as exc:
                self.failures += 1
                ceiling = min(self.options.max_backoff, 0.5 * 2 ** min(self.failures, 10))
                delay = max(0.2, random.uniform(0, ceiling))  # noqa: S311 - jitter
                self.say(f"control plane unreachable ({exc.code.name}); retrying in {delay:.1f}s")
                self.stop.wait(delay)
                continue
            except UnauthenticatedError as exc:
                raise AgentStopped(
                    f"credential refused ({exc.reason}); enroll again with a new token"
                ) from None
            except ControlPlaneError as exc:
                raise AgentStopped(exc.one_line()) from None
            if self.failures:
                self.say(f"reconnected after {self.failures} failed attempt(s)")
                self.failures = 0
            return

    def _tick(self) -> None:
        if self.pending_report is not None:
            self._send_report()
        if self.work is not None:
            self._advance()
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat()
        if self._renewal_due():
            self._renew()

    def _heartbeat(self) -> None:
        ready, reason = self._readiness()
        try:
            reply = self.client.heartbeat(
                ready=ready,
                not_ready_reason=reason,
                image=self.container.image,
                digest=self.container.digest,
            )
        except FailedPreconditionError as exc:
            if exc.reason != "NODE_NOT_REGISTERED":
                raise
            self.say("the control plane does not know this registration; registering again")
            self._start()
            return
        self._next_heartbeat = time.monotonic() + self.interval
        self._settings(reply.heartbeat)
        status = reply.node.status
        readiness = _readiness_name(status.readiness)
        if readiness != self.readiness:
            self.readiness = readiness
            self.say(f"{readiness} ({status.readiness_reason})")
        for command in reply.commands:
            self._take(command)

    def _readiness(self) -> tuple[bool, str]:
        if self.work is not None:
            return False, "Reimaging"
        path = self.options.not_ready_file
        if path is not None and path.exists():
            return False, path.read_text().strip()[:200] or "NotReadyFile"
        return True, ""

    # -- re-images ---------------------------------------------------------------

    def _take(self, command: node_pb2.NodeCommand) -> None:
        if command.command_id in self.handled or command.kind != node_pb2.NODE_COMMAND_KIND_REIMAGE:
            return
        if self.work is not None:
            return  # the registry allows one unfinished re-image per node: it is this one
        target = command.reimage.target
        work = Reimage(
            command,
            self.options.reimage_seconds,
            fails(target.image, self.options.fail_images),
        )
        try:
            self.client.report_command(
                command.command_id,
                node_pb2.NODE_COMMAND_STATE_ACKNOWLEDGED,
                f"re-imaging to {target.image}@{target.digest}",
            )
        except FailedPreconditionError as exc:
            self.handled.add(command.command_id)
            self.say(f"command {command.command_id} not taken: {exc}")
            return
        self.handled.add(command.command_id)
        self.work = work
        self.say(f"re-image {command.command_id} to {target.image}@{target.digest} started")
        self._next_heartbeat = 0.0  # say REIMAGING now

    def _advance(self) -> None:
        work = self.work
        assert work is not None
        step = work.new_step()
        if step is not None and step < 100:
            self.say(f"re-image {work.command_id}: {step}%")
        if not work.done():
            return
        state = (
            node_pb2.NODE_COMMAND_STATE_FAILED
            if work.fails
            else (node_pb2.NODE_COMMAND_STATE_SUCCEEDED)
        )
        self.pending_report = (work.command_id, state, work.outcome_message())
        self._send_report()

    def _send_report(self) -> None:
        assert self.pending_report is not None
        command_id, state, message = self.pending_report
        work = self.work
        try:
            self.client.report_command(command_id, state, message)
        except FailedPreconditionError as exc:
            self.say(f"re-image {command_id} ended meanwhile: {exc}")
        else:
            if state == node_pb2.NODE_COMMAND_STATE_SUCCEEDED and work is not None:
                self.container = node_pb2.ContainerVersion()
                self.container.CopyFrom(work.target)
            self.say(f"re-image {command_id} {_state_name(state)}: {message}")
        self.pending_report = None
        self.work = None
        self._next_heartbeat = 0.0  # tell the registry at once what the node runs now

    # -- credential --------------------------------------------------------------

    def _renewal_due(self) -> bool:
        identity = self.identity
        if identity is None:
            return False
        if self.options.renew_every is not None:
            return time.time() >= identity.issue_time + self.options.renew_every
        life = identity.expire_time - identity.issue_time
        return time.time() >= identity.issue_time + life * self.options.renew_fraction

    def _renew(self) -> None:
        reply = self.client.renew_credential()
        self._keep(self.node_id, reply.node_credential, reply.credential_expire_time)
        self.renewals += 1
        expires = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime(_seconds(reply.credential_expire_time))
        )
        self.say(f"credential renewed (valid until {expires} UTC)")


__all__ = ["AgentOptions", "AgentStopped", "NodeAgent"]
