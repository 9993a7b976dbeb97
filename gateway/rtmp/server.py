"""The asyncio RTMP listener: one task per connection, each driving an `RtmpSession`.

A connection reads with deadlines (the handshake through publish must finish within
`handshake_timeout_s`; after that, `idle_timeout_s` between reads), writes with
`write_timeout_s`, and awaits the publication's callbacks inline, so a slow consumer slows its
own publisher (TCP backpressure) and nobody else. A refused publish is counted against the
client address in the `AuthGuard`; a blocked address is refused before the handler is asked.
A broken session is logged in one line (address and error, never the key) and closed alone;
those lines are rate-limited per kind of error, since an attacker can cause one per
connection. A publish the handler aborts (`PublishAborted`: a fenced ingest) is closed alone
too, with the handler's reason.

All connections share one event loop, so none may hold it long (`RtmpLimits`): what a read
brings is fed to the session in slices of `parse_slice_bytes`, with a yield to the loop after
each, and the CPU time each connection spends parsing is metered (`parse_cpu_share` of a core,
with a burst). A connection that spends a budget (bytes or messages before its publish is
accepted, messages a second after, parse CPU) is closed and counted in
`protocol_errors_total` and `budget_exceeded_total`. With a `Registry` the counts are also
exported (`onair_rtmp_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from gateway.rtmp.guard import AuthGuard
from gateway.rtmp.limits import Allowance, RtmpLimits
from gateway.rtmp.session import (
    ConfigReady,
    Event,
    Media,
    Metadata,
    PublishEnded,
    PublishRequested,
    RtmpSession,
    SessionState,
)
from gateway.rtmp.types import Publication, PublishHandler
from pipeline.errors import (
    AuthError,
    BudgetExceeded,
    ChannelBusy,
    ProtocolError,
    PublishAborted,
)
from pipeline.metrics import Counter, Registry
from pipeline.ratelog import LogLimiter, suffix

__all__ = ["Publication", "PublishHandler", "RtmpLimits", "RtmpServer", "ServerCounts"]

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
BLOCKED_MESSAGE = "Too many failed attempts from this address; try again later."


@dataclass(slots=True)
class ServerCounts:
    connections_open: int = 0
    connections_total: int = 0
    connections_rejected_total: int = 0  # over max_connections
    publishes_total: int = 0
    publishes_refused_total: int = 0
    protocol_errors_total: int = 0
    budget_exceeded_total: int = 0  # closed for spending a budget (also a protocol error)
    timeouts_total: int = 0


_HELP = {
    "connections_total": "RTMP connections accepted.",
    "connections_rejected_total": "RTMP connections refused: too many open.",
    "publishes_total": "RTMP publishes accepted.",
    "publishes_refused_total": "RTMP publishes refused (key, blocked address, busy channel).",
    "protocol_errors_total": "RTMP connections closed for a protocol error or a spent budget.",
    "timeouts_total": "RTMP connections closed for a timeout.",
}


class RtmpServer:
    def __init__(
        self,
        host: str,
        port: int,
        handler: PublishHandler,
        guard: AuthGuard | None = None,
        *,
        app: str = "live",
        handshake_timeout_s: float = 10.0,
        idle_timeout_s: float = 30.0,
        write_timeout_s: float = 10.0,
        max_connections: int = 256,
        limits: RtmpLimits | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.host = host
        self.handler = handler
        self.guard = guard if guard is not None else AuthGuard()
        self.app = app
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.limits = limits if limits is not None else RtmpLimits()
        self.counts = ServerCounts()
        self.log_limiter = LogLimiter()
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counters: dict[str, Counter] = {}
        self._budget_counter: Counter | None = None
        if registry is not None:
            self._export(registry)

    def _export(self, registry: Registry) -> None:
        for name, help_text in _HELP.items():
            self._counters[name] = registry.counter(f"onair_rtmp_{name}", help_text)
        self._budget_counter = registry.counter(
            "onair_rtmp_budget_exceeded_total",
            "RTMP connections closed for spending a budget, by budget.",
            ("budget",),
        )
        registry.gauge("onair_rtmp_connections_open", "RTMP connections open.").set_function(
            lambda: self.counts.connections_open
        )
        registry.gauge(
            "onair_rtmp_blocked_addresses", "Addresses blocked after failed publishes."
        ).set_function(lambda: self.guard.counts().blocked_now)

    def count(self, name: str, budget: str | None = None) -> None:
        """Add one to a `ServerCounts` field (and its exported counter)."""
        setattr(self.counts, name, getattr(self.counts, name) + 1)
        counter = self._counters.get(name)
        if counter is not None:
            counter.inc()
        if budget is not None:
            self.counts.budget_exceeded_total += 1
            if self._budget_counter is not None:
                self._budget_counter.labels(budget).inc()

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._port, limit=READ_SIZE
        )
        logger.info("rtmp: listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        logger.info("rtmp: stopped")

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        peer = _peer_address(writer)
        if task is None or len(self._tasks) >= self.max_connections:
            self.count("connections_rejected_total")
            writer.close()
            return
        self._tasks.add(task)
        self.count("connections_total")
        self.counts.connections_open += 1
        try:
            await _Connection(self, reader, writer, peer).run()
        except asyncio.CancelledError:
            # stop() cancels connections after their cleanup ran; ending normally keeps
            # asyncio's stream callback (3.11) from reporting the cancellation as an error
            pass
        finally:
            self.counts.connections_open -= 1
            self._tasks.discard(task)


class _Connection:
    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.session = RtmpSession(app=server.app, limits=server.limits)
        self.publication: Publication | None = None
        limits = server.limits
        self.parse_cpu = Allowance(
            limits.parse_cpu_share, limits.parse_cpu_burst_s, asyncio.get_running_loop().time()
        )

    async def run(self) -> None:
        server = self.server
        loop = asyncio.get_running_loop()
        setup_deadline = loop.time() + server.handshake_timeout_s
        reason = "disconnected"
        clean = False
        set_up = False  # published once: from then on only the idle timeout applies
        try:
            while not self.session.closing:
                set_up = set_up or self.session.state is SessionState.PUBLISHING
                if set_up:
                    timeout = server.idle_timeout_s
                else:
                    timeout = max(0.0, setup_deadline - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    server.count("timeouts_total")
                    reason = "timeout"
                    logger.info(
                        "rtmp %s: closing: timed out in %s", self.peer, self.session.state.value
                    )
                    break
                if not data:
                    clean = True
                    break
                await self._feed(data)
        except ProtocolError as exc:
            budget = exc.budget if isinstance(exc, BudgetExceeded) else None
            server.count("protocol_errors_total", budget)
            reason = f"protocol error: {exc}"
            kind = type(exc).__name__
            held = server.log_limiter.allow((kind, budget))
            if held is not None:
                logger.warning(
                    "rtmp %s: closing in %s: %s: %s%s",
                    self.peer,
                    self.session.state.value,
                    kind,
                    exc,
                    suffix(held),
                )
        except PublishAborted as exc:  # the ingest ended the publish (e.g. its lease lapsed)
            reason = str(exc)
            logger.warning("rtmp %s: publish closed by the ingest: %s", self.peer, exc)
        except (ConnectionError, TimeoutError) as exc:
            reason = "connection lost"
            logger.info("rtmp %s: connection lost: %s", self.peer, type(exc).__name__)
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        except Exception:
            reason = "internal error"
            logger.exception("rtmp %s: closing after an internal error", self.peer)
        finally:
            await self._finish(reason, clean)

    async def _feed(self, data: bytes) -> None:
        """Parse `data` a slice at a time, yielding to the loop after each, on a CPU budget."""
        limits = self.server.limits
        step = limits.parse_slice_bytes
        loop = asyncio.get_running_loop()
        for start in range(0, len(data), step):
            if self.session.closing:
                return
            cpu_before = time.thread_time()
            out, events = self.session.feed(data[start : start + step])
            spent = time.thread_time() - cpu_before
            if not self.parse_cpu.spend(spent, loop.time()):
                raise BudgetExceeded(
                    "cpu", f"parsing took more than {limits.parse_cpu_share:.0%} of a core"
                )
            await self._send(out)
            await self._dispatch(events)
            await asyncio.sleep(0)

    async def _finish(self, reason: str, clean: bool) -> None:
        try:
            if clean and self.publication is not None:
                with contextlib.suppress(ProtocolError):
                    await self._dispatch(self.session.connection_lost())
            await self._close_publication(reason)
        finally:
            self.session.connection_lost()
            self.writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.writer.wait_closed()

    async def _send(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            async with asyncio.timeout(self.server.write_timeout_s):
                await self.writer.drain()

    async def _dispatch(self, events: list[Event]) -> None:
        queue = deque(events)
        while queue:
            event = queue.popleft()
            if isinstance(event, PublishRequested):
                queue.extend(await self._start_publish(event))
                continue
            publication = self.publication
            if publication is None:
                continue
            if isinstance(event, Media):
                await publication.on_media(event.unit)
            elif isinstance(event, ConfigReady):
                await publication.on_config(event.config)
            elif isinstance(event, Metadata):
                await publication.on_metadata(event.metadata)
            elif isinstance(event, PublishEnded):
                await self._close_publication(event.reason)

    async def _start_publish(self, event: PublishRequested) -> list[Event]:
        server = self.server
        if server.guard.is_blocked(self.peer):
            server.count("publishes_refused_total")
            held = server.log_limiter.allow("refused: blocked")
            if held is not None:
                logger.warning(
                    "rtmp %s: publish refused: address blocked%s", self.peer, suffix(held)
                )
            await self._send(self.session.refuse_publish(BLOCKED_MESSAGE))
            return []
        try:
            publication = await server.handler.start_publish(event.app, event.stream_key, self.peer)
        except AuthError as exc:
            server.count("publishes_refused_total")
            if not isinstance(exc, ChannelBusy):  # a right key on a live channel is no attack
                server.guard.record_failure(self.peer)
            message = str(exc) or "Publish refused."
            held = server.log_limiter.allow(("refused", message))
            if held is not None:
                logger.warning("rtmp %s: publish refused: %s%s", self.peer, message, suffix(held))
            await self._send(self.session.refuse_publish(message))
            return []
        server.guard.record_success(self.peer)
        server.count("publishes_total")
        self.publication = publication
        logger.info("rtmp %s: publishing", self.peer)
        out, events = self.session.accept_publish()
        await self._send(out)
        return events

    async def _close_publication(self, reason: str) -> None:
        publication, self.publication = self.publication, None
        if publication is None:
            return
        logger.info("rtmp %s: publish ended: %s", self.peer, reason)
        try:
            await publication.close(reason)
        except Exception:
            logger.exception("rtmp %s: publication close failed", self.peer)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "unknown"
