"""How `onair http` listens: one process, one event loop, one app, up to three ports.

    :8080  HTTP/1.1        uvicorn on uvloop + httptools (the small-object throughput that
                           LL-HLS's blocking playlist reloads need; README "Benchmarks"); the
                           origin's cache hits and LL playlists answered in its protocol,
                           before ASGI, blocking reloads parked (`OriginHttpTools`)
    :8081  h2c + HTTP/1.1  hypercorn: HTTP/2 in clear text, by prior knowledge or Upgrade (what
                           a CDN or a load balancer speaks to its origins)
    :8443  h2 + HTTP/1.1   hypercorn over TLS, ALPN `h2`, `http/1.1`; only when a certificate
                           and its key are configured (Safari plays LL-HLS over HTTP/2)

Every port serves the same Starlette app, so one object cache, one set of LL-HLS waiters and
one chat service answer all of them. uvicorn runs the app's lifespan (the tables, chat, the
LL-HLS follower); hypercorn starts once that is done and stops first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import httptools
import uvicorn
import uvloop
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.http.mw_metrics import RequestMetrics
from gateway.origin.hls import FastLane
from gateway.origin.lowlatency import LowLatencyOrigin
from gateway.origin.parking import Parked, Wire
from pipeline.errors import ConfigError, OnairError

logger = logging.getLogger(__name__)

WS_MAX_BYTES = 65536  # a chat frame is at most 16 KiB of text (ONAIR_CHAT_MAX_FRAME_CHARS)
MAX_HEAD_BYTES = 64 * 1024  # a request line and its headers (hypercorn's h11: 16 KiB)
_LL_MEDIA = re.compile(r"/live/([^/]+)/([^/]+)/ll\.m3u8")
LL_MEDIA_ROUTE = "/live/{channel}/{rendition}/ll.m3u8"  # its label in the request metrics
_JOIN_BYTES = 64 * 1024  # a body up to this is copied into one write with its head


@dataclass(frozen=True, slots=True)
class Listeners:
    host: str
    http_port: int
    h2c_port: int = 0  # 0: no clear-text HTTP/2 port
    https_port: int = 0  # used when cert_file and key_file are set
    cert_file: str = ""
    key_file: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.cert_file and self.key_file and self.https_port)

    @property
    def http2(self) -> bool:
        return bool(self.h2c_port) or self.tls


def serve(app: ASGIApp, listeners: Listeners) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers), then stop gracefully. The HTTP/2 ports
    are bound and the certificate loaded first, so a taken port or a bad certificate stops the
    process before it ever reports healthy."""
    config = uvicorn_config(app, listeners)
    if not listeners.http2:
        uvicorn.Server(config).run()
        return
    h2_config = hypercorn_config(listeners)
    if listeners.tls:
        try:
            h2_config.create_ssl_context()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                "ONAIR_TLS_CERT_FILE", f"cannot use it with ONAIR_TLS_KEY_FILE: {exc}"
            ) from exc
    try:
        sockets = h2_config.create_sockets()
    except OSError as exc:
        ports = ", ".join(h2_config.bind + h2_config.insecure_bind)
        raise ConfigError(
            "ONAIR_H2C_PORT" if not listeners.tls else "ONAIR_H2C_PORT/ONAIR_HTTPS_PORT",
            f"cannot listen on {ports}: {exc}",
        ) from exc
    uvloop.run(_serve_both(app, config, h2_config, sockets))


def uvicorn_config(app: ASGIApp, listeners: Listeners) -> uvicorn.Config:
    """uvicorn as `onair http` runs it; given the gateway's app (its `state.fast_lane`, and
    `state.ll_origin` when it serves LL-HLS), the listener answers the origin's cache hits
    and LL playlists itself (`OriginHttpTools`)."""
    state = getattr(app, "state", None)
    protocol: type[HttpToolsProtocol] = BoundedHttpTools
    if state is not None and isinstance(getattr(state, "fast_lane", None), FastLane):
        ll = getattr(state, "ll_origin", None)
        attributes = {
            "lane": state.fast_lane,
            "ll": ll if isinstance(ll, LowLatencyOrigin) else None,
            "metrics": RequestMetrics(state.registry),
        }
        protocol = type("OriginHttpTools", (OriginHttpTools,), attributes)
    return uvicorn.Config(app, host=listeners.host, port=listeners.http_port,
                          log_level="warning", ws_max_size=WS_MAX_BYTES, loop="uvloop",
                          http=protocol)  # fmt: skip


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bound its h11 protocol has and httptools lacks:
    a request head (request line and headers) over `MAX_HEAD_BYTES` is answered 400 and the
    connection closed as its bytes arrive, before httptools buffers a header whole. (Counted
    per read while the head is incomplete, so the first bytes of a body read with it count
    too: the gateway's bodies are at most 16 KiB.)"""

    _head_bytes = 0
    _in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.logger.warning("Request head over %d bytes: refused.", MAX_HEAD_BYTES)
                self.send_400_response("Request head too large.")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # a keep-alive connection's next request


class OriginHttpTools(BoundedHttpTools):
    """`BoundedHttpTools` that answers the origin's hot requests as soon as the request head
    is parsed — no ASGI scope, no task, no Starlette, one write of the status line, headers
    and body the route would send:

    - a cache hit (`FastLane`: a plain GET of a playlist, segment or part the cache holds
      fresh), which is most of what an LL-HLS origin serves;
    - an LL media playlist (`LowLatencyOrigin.answer_or_park`): answered at once, or, for a
      blocking reload whose part is not listed yet, parked — the connection waits as a
      record in the origin, not a coroutine, and the origin writes one render to every
      parked viewer when the part's event comes (or the 503 after three target durations).

    Everything else, and any request behind one still being answered (pipelining keeps
    answers in order: a parked request stands as uvicorn's current cycle), goes to uvicorn
    as before. Counted in the same request metrics under the same route."""

    lane: FastLane
    ll: LowLatencyOrigin | None
    metrics: RequestMetrics
    _answered = False  # this request was answered (or parked) here: its message end is ours

    def on_headers_complete(self) -> None:
        try:
            answered = self._answer()
        except Exception:  # a bug here must not become httptools' 400: the app answers
            logger.exception("answering a request in the listener failed; the app answers it")
            answered = False
        if answered:
            self._in_head, self._answered = False, True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:  # a GET's body, if one came, is ignored, as the route does
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()
            return
        self._answered = False
        self._in_head, self._head_bytes = True, 0

    def _answer(self) -> bool:
        if self.cycle is not None and not self.cycle.response_complete:
            return False
        parser = self.parser
        if (
            parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.flow.write_paused
        ):
            return False
        started = time.perf_counter()
        try:
            url = httptools.parse_url(self.url)
            raw_path = url.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False
        if self.ll is not None and path.endswith("/ll.m3u8"):
            return self._answer_ll(self.ll, path, raw_path, url.query, started)
        hit = self.lane.hit(path, raw_path, self.headers)
        if hit is None:
            return False
        route, obj = hit
        self._write(200, self.lane.header_lines(obj), obj.body)
        self._completed()
        self.metrics.count(route.path, 200, time.perf_counter() - started)
        return True

    def _answer_ll(
        self, ll: LowLatencyOrigin, path: str, raw_path: bytes, query: bytes | None,
        started: float,
    ) -> bool:  # fmt: skip
        match = _LL_MEDIA.fullmatch(path)
        if match is None or b"%" in raw_path:
            return False
        params = dict(parse_qsl((query or b"").decode("latin-1"), keep_blank_values=True))
        encodings = next((v for k, v in self.headers if k == b"accept-encoding"), b"")
        cycle = _ParkedCycle(started)
        parked = Parked(deliver=partial(self._deliver, cycle), gone=partial(self._gone, cycle))
        answer = ll.answer_or_park(
            match.group(1), match.group(2), params, b"gzip" in encodings, parked
        )
        if answer is None:
            return False
        if answer is True:  # parked: pipelined requests queue behind it, as behind a cycle
            self.cycle = cycle  # type: ignore[assignment]
            self._unset_keepalive_if_required()  # one armed by an answer just before it
            return True
        assert isinstance(answer, Wire)
        self._write(answer.status, answer.header_lines, answer.body)
        self._completed()
        self.metrics.count(LL_MEDIA_ROUTE, answer.status, time.perf_counter() - started)
        return True

    def _deliver(self, cycle: _ParkedCycle, wire: Wire) -> None:
        """A parked request's answer, from the LL origin (on the event loop)."""
        if self._gone(cycle):
            return
        self._write(wire.status, wire.header_lines, wire.body)
        cycle.response_complete = True
        self.metrics.count(LL_MEDIA_ROUTE, wire.status, time.perf_counter() - cycle.started)
        if not cycle.keep_alive:  # the server is shutting down
            self.transport.close()
            return
        self.on_response_complete()  # uvicorn's: the next pipelined request, keep-alive timer

    def _gone(self, cycle: _ParkedCycle) -> bool:
        """The viewer of a parked request hung up. (A request pipelined behind it may be
        uvicorn's current cycle by now: the transport says it too.)"""
        return cycle.disconnected or self.transport.is_closing()

    def _write(self, status: int, header_lines: bytes, body: bytes) -> None:
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:  # date, server
            head += (name, b": ", value, b"\r\n")
        head += (header_lines, b"\r\n")
        if len(body) <= _JOIN_BYTES:
            self.transport.write(b"".join((*head, body)))
        else:  # a segment: no copy of its megabyte
            self.transport.writelines((b"".join(head), body))

    def _completed(self) -> None:
        """What uvicorn does once a response is complete: count it, re-arm the keep-alive
        timer (the connection's current cycle, if any, was complete already)."""
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


class _ParkedCycle:
    """Stands as uvicorn's current cycle while a request is parked in the LL origin: what
    the protocol reads of a cycle (uvicorn queues a pipelined request behind it, marks it
    disconnected when the connection drops, not keep-alive when the server shuts down)."""

    __slots__ = ("disconnected", "keep_alive", "response_complete", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True

    @property
    def message_event(self) -> _NoEvent:
        return _NO_EVENT


class _NoEvent:
    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


def hypercorn_config(listeners: Listeners) -> HypercornConfig:
    config = HypercornConfig()
    config.loglevel = "WARNING"
    config.accesslog = None
    config.websocket_max_message_size = WS_MAX_BYTES
    clear = [f"{listeners.host}:{listeners.h2c_port}"] if listeners.h2c_port else []
    if listeners.tls:
        config.certfile, config.keyfile = listeners.cert_file, listeners.key_file
        config.bind = [f"{listeners.host}:{listeners.https_port}"]
        config.insecure_bind = clear
    else:
        config.bind = clear
    return config


class _Server(uvicorn.Server):
    """uvicorn, closing its listener and then stopping the HTTP/2 listeners before it closes
    its own connections and runs the lifespan's shutdown."""

    def __init__(self, config: uvicorn.Config, stop_http2: asyncio.Event) -> None:
        super().__init__(config)
        self.stop_http2 = stop_http2
        self.http2: asyncio.Task[None] | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()  # no new HTTP/1.1 connections while HTTP/2 drains
        self.stop_http2.set()
        if self.http2 is not None:
            await asyncio.gather(self.http2, return_exceptions=True)
        await super().shutdown(sockets)


async def _serve_both(
    app: ASGIApp, config: uvicorn.Config, h2_config: HypercornConfig, sockets: Sockets
) -> None:
    stop_http2 = asyncio.Event()
    server = _Server(config, stop_http2)
    main = asyncio.create_task(server.serve())
    while not server.started:  # the lifespan has run: the tables are read
        if main.done():
            break
        await asyncio.sleep(0.02)
    if main.done() or server.should_exit:  # it failed to start, or a signal came meanwhile
        await main  # its error (uvicorn exits 3 when it cannot start) is ours
        if not server.started:
            raise OnairError("the HTTP server did not start")
        return
    bare: Any = _without_lifespan(app)  # hypercorn types ASGI apps more narrowly
    h2_app = wrap_app(bare, h2_config.wsgi_max_body_size, "asgi")
    server.http2 = asyncio.create_task(
        worker_serve(h2_app, h2_config, sockets=sockets, shutdown_trigger=stop_http2.wait)
    )
    done, _ = await asyncio.wait({main, server.http2}, return_when=asyncio.FIRST_COMPLETED)
    if server.http2 in done and not stop_http2.is_set():  # not uvicorn's shutdown: a failure
        error = server.http2.exception()
        logger.error("the HTTP/2 listeners stopped (%s): stopping", error or "no error")
        server.should_exit = True
        await main
        if error is not None:
            ports = ", ".join(h2_config.bind + h2_config.insecure_bind)
            raise OnairError(f"HTTP/2 on {ports} failed: {error}") from error
        return
    await main


def _without_lifespan(app: ASGIApp) -> ASGIApp:
    """The app for the second server: its lifespan is uvicorn's to run, once."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped
