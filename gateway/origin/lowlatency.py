"""The low-latency HLS origin: playlists rendered from memory, woken by Kafka.

    /live/<channel>/ll.m3u8                 the LL master playlist (fMP4 renditions)
    /live/<channel>/<rendition>/ll.m3u8     an LL media playlist; `_HLS_msn`, `_HLS_part`
                                            block until that part is listed, `_HLS_skip=YES|v2`
                                            answers a delta update
    parts, segments and inits are objects (hls.py): /live/<channel>/<rendition>/<stream_id>/…

Every origin follows `onair.parts` itself (a follower with no group, from a few minutes back),
so it learns that a part exists from the event the transcode worker produced once the part
was durable — never by polling the store — and any number of origins behind a load balancer
wake together. On the HTTP/1.1 port a waiting request is a `Parked` record (parking.py: no
coroutine, no thread, no store read; `answer_or_park`), on the others a coroutine on an
`asyncio.Future` of its playlist; when the follower lists a part, the parked requests of the
playlists it changed are answered and their futures resolved, on the event loop. Renders are
cached per (playlist, stream version, skip, gzip): N blocked viewers cost one render.

Answers (draft-pantos-hls-rfc8216bis §6.2.5.2): `_HLS_part` without `_HLS_msn`, values that
are not small integers, or an msn more than two segments past the newest listed → 400; a wait
longer than three target durations → 503; a blocking answer is cacheable for six target
durations (its URL names exactly what it holds), a plain one for a second.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.origin.hls import CHANNEL, CORS_HEADERS, PREFLIGHT_HEADERS, RENDITION
from gateway.origin.parking import Parked, ParkingLot, Wire, wire_of
from pipeline.errors import CodecError
from pipeline.llhls import (
    LlConfig,
    LlRendition,
    LlVariant,
    blocking_query,
    media_cache_control,
    render_master,
    render_media,
    target_duration,
)
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.follower import Follower
from topics.reader import Start
from topics.specs import PARTS

logger = logging.getLogger(__name__)

M3U8 = "application/vnd.apple.mpegurl"
LOOKBACK_S = 300  # an origin starting reads this much of onair.parts back
MSN_AHEAD_LIMIT = 2  # an msn further than this past the newest listed is a 400
TIMEOUT_TEXT = "the requested part did not come in time"  # the 503 after 3 target durations
PART_NAME = re.compile(r"([0-9]{1,12})\.([0-9]{1,3})\.m4s")


@dataclass
class LiveStream:
    """The channel's current stream as the origin knows it: one `LlRendition` per rung."""

    stream_id: str
    started_ms: int
    window: int
    names: list[str] = field(default_factory=list)  # every rendition it gets
    renditions: dict[str, LlRendition] = field(default_factory=dict)
    version: int = 0  # any rendition changed: rendition reports change too

    def rendition(self, name: str) -> LlRendition:
        found = self.renditions.get(name)
        if found is None:
            found = self.renditions[name] = LlRendition(name, self.window)
        return found

    def ready(self) -> bool:
        """Every rendition has a complete segment (the master never names an empty one)."""
        names = self.names or list(self.renditions)
        return bool(names) and all(
            n in self.renditions and self.renditions[n].segments for n in names
        )


class LowLatencyOrigin:
    """The LL playlists of every live channel, followed from `onair.parts`."""

    def __init__(
        self,
        bootstrap: str,
        *,
        config: LlConfig,
        window: int = 30,
        registry: Registry | None = None,
        lookback_s: float = LOOKBACK_S,
    ) -> None:
        self.config = config
        self.window = window
        self.streams: dict[str, LiveStream] = {}  # by channel
        self._lock = threading.Lock()
        self._codec = Codec()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._renders: dict[tuple[Any, ...], bytes] = {}
        self._wires: dict[tuple[Any, ...], Wire] = {}  # a render's 200 as the listener sends it
        self._lot = ParkingLot()  # the listener's parked blocking reloads
        registry = registry or Registry()
        self._lookback_ms = int(lookback_s * 1000)
        self.follower = Follower(
            "ll-parts",
            bootstrap,
            PARTS,
            self._on_batch,
            start=Start.at_time(int(time.time() * 1000) - self._lookback_ms),
            registry=registry,
            poll_s=0.05,
        )
        self.renders = registry.counter(
            "onair_ll_playlist_renders_total", "LL-HLS playlists rendered (cached per version)."
        )
        self.blocked = registry.gauge(
            "onair_ll_blocked_requests", "LL-HLS playlist requests waiting for a part."
        )
        self.answers = registry.counter(
            "onair_ll_playlist_requests_total",
            "LL-HLS playlist requests by outcome (plain, blocked, skip, bad, timeout).",
            ("outcome",),
        )
        self.bad_events = registry.counter(
            "onair_ll_bad_events_total", "onair.parts records that could not be read."
        )

    # --- following onair.parts (the follower's thread) ----------------------------------

    def _on_batch(self, messages: list[Message]) -> None:
        changed: set[tuple[str, str]] = set()
        with self._lock:
            for message in messages:
                try:
                    record = self._codec.expect("PartReady", message.value())
                except CodecError as exc:
                    self.bad_events.inc()
                    logger.warning("ll origin: skipped a record of %s: %s", PARTS, exc)
                    continue
                changed |= self.apply(record)
        loop = self._loop
        if changed and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, changed)

    def apply(self, record: Mapping[str, Any]) -> set[tuple[str, str]]:
        """Fold one PartReady in (the caller holds the lock): the playlists it changed."""
        channel, stream_id = record["channel"], record["stream_id"]
        stream = self.streams.get(channel)
        if stream is None or stream.stream_id != stream_id:
            if stream is not None and record["ingest_time_ms"] < stream.started_ms:
                return set()  # a late record of the channel's previous stream
            if record["end_of_stream"]:
                return set()
            stream = self.streams[channel] = LiveStream(
                stream_id, record["ingest_time_ms"], self.window
            )
        if record["renditions"]:
            stream.names = list(record["renditions"])
        if not stream.rendition(record["rendition"]).add(record):
            return set()
        stream.version += 1
        # a rendition report changed in every sibling playlist: wake them all
        return {(channel, name) for name in stream.renditions}

    def _wake(self, changed: set[tuple[str, str]]) -> None:
        for key in changed:
            self._answer_parked(key)
            future = self._waiters.pop(key, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def _changed(self, key: tuple[str, str], timeout_s: float) -> None:
        """Wait until the playlist `key` changes (or the timeout passes)."""
        future = self._waiters.get(key)
        if future is None or future.done():
            future = self._waiters[key] = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(asyncio.shield(future), timeout_s)

    # --- answering ------------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/live/{channel}/ll.m3u8", self.master, methods=["GET", "HEAD", "OPTIONS"],
                  name="hls:ll_master"),
            Route("/live/{channel}/{rendition}/ll.m3u8", self.media,
                  methods=["GET", "HEAD", "OPTIONS"], name="hls:ll_media"),
        ]  # fmt: skip

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        del app
        self._loop = asyncio.get_running_loop()
        self.follower.start()
        await asyncio.to_thread(self.follower.wait_caught_up, 10.0)
        try:
            yield
        finally:
            await asyncio.to_thread(self.follower.stop)
            self._loop = None

    async def master(self, request: Request) -> Response:
        channel = request.path_params["channel"]
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=PREFLIGHT_HEADERS)
        if not _valid(CHANNEL, channel):
            return _plain(404, "Not Found")
        with self._lock:
            stream = self.streams.get(channel)
            if stream is None or not stream.ready():
                return _plain(404, "Not Found")
            # rendered again as the renditions' bandwidth figures move (one request a viewer)
            key = ("master", channel, stream.stream_id, stream.version)
            body = self._renders.get(key)
            if body is None:
                names = stream.names or sorted(stream.renditions)
                variants = [LlVariant(f"{n}/ll.m3u8", stream.renditions[n]) for n in names]
                body = self._remember(key, render_master(variants).encode())
        return self._playlist(request, body, key, "public, max-age=2")

    async def media(self, request: Request) -> Response:
        channel, name = request.path_params["channel"], request.path_params["rendition"]
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=PREFLIGHT_HEADERS)
        if not (_valid(CHANNEL, channel) and _valid(RENDITION, name)):
            return _plain(404, "Not Found")
        asked = blocking_query(request.query_params)
        if asked is None:
            self.answers.labels("bad").inc()
            return _plain(400, "_HLS_msn must be a number, and _HLS_part needs _HLS_msn")
        msn, part, skip = asked
        with self._lock:
            stream = self.streams.get(channel)
            rendition = stream.renditions.get(name) if stream is not None else None
            if stream is None or rendition is None or rendition.last_msn < 0:
                return _plain(404, "Not Found")
            if msn is not None and msn > rendition.last_msn + MSN_AHEAD_LIMIT:
                self.answers.labels("bad").inc()
                return _plain(400, f"_HLS_msn={msn} is too far ahead of the live edge")
            stream_id = stream.stream_id
            target_s = target_duration(rendition, self.config)
        if msn is not None:
            outcome = await self._block(channel, name, stream_id, msn, part, 3 * target_s)
            if outcome is not None:
                return outcome
        with self._lock:
            stream = self.streams.get(channel)
            if stream is None or name not in stream.renditions:
                return _plain(404, "Not Found")
            key = ("media", channel, stream.stream_id, name, stream.version, skip)
            body = self._renders.get(key)
            if body is None:
                body = self._remember(key, self._render(stream, name, skip))
        self.answers.labels("skip" if skip else "blocked" if msn is not None else "plain").inc()
        return self._playlist(request, body, key, media_cache_control(msn, target_s))

    async def _block(
        self, channel: str, name: str, stream_id: str, msn: int, part: int | None, limit_s: float
    ) -> Response | None:
        """Hold until the playlist lists (msn, part): None then, or the 503 once `limit_s`
        (three target durations) passed."""
        deadline = time.monotonic() + limit_s
        self.blocked.inc()
        try:
            while True:
                with self._lock:
                    stream = self.streams.get(channel)
                    if stream is None or stream.stream_id != stream_id:
                        return None  # a new stream took the channel: answer what there is
                    if stream.rendition(name).has(msn, part):
                        return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await self._changed((channel, name), remaining)
                except TimeoutError:
                    break
        finally:
            self.blocked.dec()
        self.answers.labels("timeout").inc()
        return _plain(503, TIMEOUT_TEXT, retry_after=1)

    def _render(self, stream: LiveStream, name: str, skip: bool) -> bytes:
        self.renders.inc()
        rendition = stream.renditions[name]
        others = [stream.renditions[n] for n in sorted(stream.renditions)]
        text = render_media(
            rendition, others, self.config, uri=_relative_uri,
            report_uri=lambda other: f"../{other}/ll.m3u8", skip=skip,
        )  # fmt: skip
        return text.encode()

    def _remember(self, key: tuple[Any, ...], body: bytes) -> bytes:
        if len(self._renders) > 4096:  # old versions are never asked for again
            self._renders.clear()
        self._renders[key] = body
        return body

    def _playlist(
        self, request: Request, body: bytes, key: tuple[Any, ...], cache_control: str
    ) -> Response:
        zipped = "gzip" in request.headers.get("accept-encoding", "")
        body, headers = self._encoded(body, key, cache_control, zipped)
        if request.method == "HEAD":
            headers["content-length"] = str(len(body))
            return Response(b"", media_type=M3U8, headers=headers)
        return Response(body, media_type=M3U8, headers=headers)

    def _encoded(
        self, body: bytes, key: tuple[Any, ...], cache_control: str, zipped: bool
    ) -> tuple[bytes, dict[str, str]]:
        """The body as sent (gzip when the client takes it and it is worth it) and the
        playlist's headers."""
        headers = {**CORS_HEADERS, "cache-control": cache_control, "vary": "Accept-Encoding"}
        if zipped and len(body) > 512:
            zipped_key = (*key, "gzip")
            compressed = self._renders.get(zipped_key)
            if compressed is None:
                compressed = self._remember(zipped_key, gzip.compress(body, 5, mtime=0))
            body = compressed
            headers["content-encoding"] = "gzip"
        return body, headers

    # --- the HTTP/1.1 listener's door (gateway/http/listen.py) ----------------------------

    def answer_or_park(
        self, channel: str, name: str, query: Mapping[str, str], zipped: bool, parked: Parked
    ) -> Wire | bool | None:
        """An LL media playlist GET as the listener's protocol hands it over, without the
        app: the 200 to send now (a plain or skip request, or one whose part is listed), True
        when `parked` now waits for its part (its `deliver` is called once: the 200 when
        the part is listed, the 503 after three target durations), or None when the route
        must answer (a 400 or 404, something unusual). Same rules, headers and bodies as
        `media`."""
        asked = blocking_query(query)
        if asked is None or not (_valid(CHANNEL, channel) and _valid(RENDITION, name)):
            return None
        msn, part, skip = asked
        with self._lock:
            stream = self.streams.get(channel)
            rendition = stream.renditions.get(name) if stream is not None else None
            if stream is None or rendition is None or rendition.last_msn < 0:
                return None
            if msn is not None and msn > rendition.last_msn + MSN_AHEAD_LIMIT:
                return None
            target_s = target_duration(rendition, self.config)
            if msn is None or rendition.has(msn, part):
                wire = self._wire(channel, stream, name, skip, msn, target_s, zipped)
                self.answers.labels(
                    "skip" if skip else "blocked" if msn is not None else "plain"
                ).inc()
                return wire
            parked.stream_id, parked.msn, parked.part = stream.stream_id, msn, part
            parked.skip, parked.zipped, parked.target_s = skip, zipped, target_s
        self._lot.park((channel, name), parked, 3 * target_s, self._timed_out)
        self.blocked.inc()
        return True

    def _wire(
        self, channel: str, stream: LiveStream, name: str, skip: bool, msn: int | None,
        target_s: float, zipped: bool,
    ) -> Wire:  # fmt: skip
        """The 200 for this playlist version as header lines and body (the caller holds the
        lock); rendered once per version, its headers built once per (version, encoding)."""
        key = ("media", channel, stream.stream_id, name, stream.version, skip)
        wire_key = (*key, "wire", zipped, msn is not None)
        found = self._wires.get(wire_key)
        if found is not None:
            return found
        body = self._renders.get(key)
        if body is None:
            body = self._remember(key, self._render(stream, name, skip))
        body, headers = self._encoded(body, key, media_cache_control(msn, target_s), zipped)
        wire = wire_of(Response(body, media_type=M3U8, headers=headers))
        if len(self._wires) > 4096:
            self._wires.clear()
        self._wires[wire_key] = wire
        return wire

    def _answer_parked(self, key: tuple[str, str]) -> None:
        """The playlist `key` changed: answer every parked request it now satisfies (one
        render and one header block for all of them), keep the others parked."""
        parked = self._lot.take(key)
        if not parked:
            return
        channel, name = key
        ready: list[tuple[Parked, Wire]] = []
        waiting: list[Parked] = []
        wires: dict[tuple[bool, bool], Wire] = {}
        with self._lock:
            stream = self.streams.get(channel)
            for one in parked:
                if one.gone():  # the viewer hung up
                    one.finish()
                    self.blocked.dec()
                    continue
                if stream is None or name not in stream.renditions:
                    waiting.append(one)  # cannot happen (streams are replaced, not removed)
                    continue
                same = stream.stream_id == one.stream_id
                if same and not stream.renditions[name].has(one.msn, one.part):
                    waiting.append(one)
                    continue
                # listed; or a new stream took the channel: answer what there is, as `media`
                wire = wires.get((one.skip, one.zipped))
                if wire is None:
                    wire = wires[(one.skip, one.zipped)] = self._wire(
                        channel, stream, name, one.skip, one.msn, one.target_s, one.zipped
                    )
                ready.append((one, wire))
        self._lot.keep(key, waiting)
        if ready:
            self.answers.labels("blocked").inc(sum(1 for one, _ in ready if not one.skip))
            self.answers.labels("skip").inc(sum(1 for one, _ in ready if one.skip))
            self.blocked.dec(len(ready))
        for one, wire in ready:
            one.finish()
            one.deliver(wire)

    def _timed_out(self, parked: Parked) -> None:
        """Three target durations passed: the 503."""
        self.blocked.dec()
        self.answers.labels("timeout").inc()
        if not parked.gone():
            parked.deliver(TIMEOUT_WIRE)

    # --- parts not there yet (the preload hint) -----------------------------------------

    async def wait_for_part(self, key: str) -> bool:
        """`key` is a part object not in the store yet: wait (at most three target
        durations) until its PartReady comes. False when it is not the next part of a live
        rendition, or it does not come in time."""
        folders = key.split("/")
        if len(folders) != 4 or folders[0] != "streams":
            return False
        _, stream_id, name, filename = folders
        match = PART_NAME.fullmatch(filename)
        if match is None:
            return False
        wanted = (int(match.group(1)), int(match.group(2)))
        deadline = time.monotonic() + 3 * self.config.target_duration_s
        while True:
            with self._lock:
                found = next(
                    ((c, s) for c, s in self.streams.items() if s.stream_id == stream_id), None
                )
                if found is None or name not in found[1].renditions:
                    return False
                channel, stream = found
                rendition = stream.renditions[name]
                if rendition.has(*wanted):
                    return True
                nxt = rendition.next_part()
                if nxt is None or wanted[0] > nxt[0] + 1:
                    return False  # ended, or far ahead of anything a hint names
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await self._changed((channel, name), remaining)
            except TimeoutError:
                return False


def _relative_uri(key: str) -> str:
    """streams/<stream_id>/<rendition>/<name> → <stream_id>/<name>, relative to the media
    playlist /live/<channel>/<rendition>/ll.m3u8 (the origin maps it back)."""
    parts = key.split("/")
    return f"{parts[1]}/{parts[3]}"


def _valid(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None


def _plain(status: int, text: str, *, retry_after: int | None = None) -> Response:
    headers = {**CORS_HEADERS, "cache-control": "no-cache"}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return Response(text, status_code=status, media_type="text/plain", headers=headers)


TIMEOUT_WIRE = wire_of(_plain(503, TIMEOUT_TEXT, retry_after=1))
