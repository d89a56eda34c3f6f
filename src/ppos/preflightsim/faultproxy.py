"""A TCP proxy in front of the simulator that can cut a connection mid-answer.

gRPC servers cannot drop their own connection halfway through a message, so
with `--fault-proxy` the simulator's gRPC server listens on a private
loopback port and this proxy takes the public address. A handler that wants
to drop a call tells the proxy which upstream connection it came in on (the
call's peer is the proxy's own upstream socket) and how many more bytes to
let through; the proxy forwards that many bytes of the answer, then resets
both sockets. The caller sees its call fail with UNAVAILABLE mid-page.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from ppos.preflightsim.logs import get_logger

CHUNK = 64 * 1024
_log = get_logger("ppos.preflightsim.proxy")


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    cut_budget: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._links: dict[int, _Link] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            _abort(link)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self, peer: str, after_bytes: int) -> bool:
        """Cut the connection a call came in on after `after_bytes` more answer bytes."""
        port_text = peer.rpartition(":")[2]
        link = self._links.get(int(port_text)) if port_text.isdigit() else None
        if link is None:
            _log.warning("preflightsim.proxy_unknown_peer", peer=peer)
            return False
        link.cut_budget = after_bytes
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        for sock_writer in (writer, up_writer):
            sock = sock_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local_port = up_writer.get_extra_info("sockname")[1]
        link = _Link(writer, up_writer)
        self._links[local_port] = link
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link, downstream=False)),
            asyncio.create_task(self._pump(up_reader, writer, link, downstream=True)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.pop(local_port, None)
            _abort(link)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        downstream: bool,
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if downstream and link.cut_budget is not None:
                    writer.write(data[: link.cut_budget])
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    _log.info("preflightsim.connection_dropped", forwarded=link.cut_budget)
                    _abort(link)
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            _abort(link)


def _abort(link: _Link) -> None:
    for writer in (link.client, link.upstream):
        transport = writer.transport
        if not transport.is_closing():
            transport.abort()
