"""The HLS origin: URL → object key, served from the cache with HTTP caching semantics.

    /live/<channel>/master.m3u8                      → live/<channel>/master.m3u8
    /live/<channel>/<rendition>/index.m3u8           → live/<channel>/<rendition>/index.m3u8
    /live/<channel>/<rendition>/<stream_id>/<seq>.ts → streams/<stream_id>/<rendition>/<seq>.ts
    /live/<channel>/<rendition>/<stream_id>/<cmaf>   → streams/<stream_id>/<rendition>/<cmaf>
        (<cmaf>: <seq>.m4s, <seq>.<part>.m4s or init-<digest>.mp4; a part not stored yet is
        waited for while it is the next one a live playlist hints: lowlatency.py)
    /vod/<stream_id>/master.m3u8                     → vod/<stream_id>/master.m3u8
    /vod/<stream_id>/<rendition>/index.m3u8          → vod/<stream_id>/<rendition>/index.m3u8
    /vod/<stream_id>/<rendition>/<seq>.ts            → streams/<stream_id>/<rendition>/<seq>.ts
    /vod/<stream_id>/<rendition>/<seq>.m4s           → streams/<stream_id>/<rendition>/<seq>.m4s
    /vod/<stream_id>/<rendition>/init-<digest>.mp4   → streams/<stream_id>/<rendition>/init-….mp4
        (a VOD whose segments were written as CMAF lists them: workers/vod/timeline.py)
    /vod/<stream_id>/<file>.(mp4|jpg|vtt|json)       → vod/<stream_id>/<file>   (byte ranges)

Every path segment must match its strict pattern; anything else, and any percent-encoded
byte at all (none of the patterns needs one: `%2f`, `%2e%2e` and friends are refused
outright), is a 404 that never reaches the store. Cache-Control is whatever the object's
writer stored; the ETag is strong; a VOD file too large for the cache (an MP4 of hours) is
served from ranged store reads, never loaded whole; responses carry
`Access-Control-Allow-Origin: *` because players (and CDNs) live on other origins.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.origin.cache import ObjectCache
from pipeline import keys
from pipeline.errors import ObjectNotFound, StoreError
from pipeline.store import ObjectInfo, StoredObject, check_key, content_type_for

logger = logging.getLogger(__name__)

CHANNEL = re.compile(r"[a-z0-9_]{1,32}")
STREAM_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.\-]{1,80}")
RENDITION = re.compile(r"[0-9]{2,4}p[0-9]{2,3}")
SEQ = re.compile(r"[0-9]{1,12}")
CMAF_NAME = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,3})?\.m4s|init-[0-9a-f]{16}\.mp4")
VOD_CMAF_NAME = re.compile(r"[0-9]{1,12}\.m4s|init-[0-9a-f]{16}\.mp4")  # whole segments
VOD_FILE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,79}\.(?:mp4|jpg|vtt|json)")

CORS_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "Content-Length, Content-Range, Accept-Ranges, ETag",
    "timing-allow-origin": "*",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "access-control-allow-methods": "GET, HEAD, OPTIONS",
    "access-control-allow-headers": "Range, If-None-Match, If-Range",
    "access-control-max-age": "86400",
}
DEFAULT_CACHE_CONTROL = "no-cache"
LARGE_READ_BYTES = 1024 * 1024  # one ranged store read while streaming a large object

KeyRule = Callable[[Mapping[str, str]], str | None]
PartWaiter = Callable[[str], Awaitable[bool]]


def _valid(pattern: re.Pattern[str], value: str | None) -> bool:
    return value is not None and pattern.fullmatch(value) is not None


def live_master_key(p: Mapping[str, str]) -> str | None:
    if _valid(CHANNEL, p.get("channel")):
        return keys.live_master_key(p["channel"])
    return None


def live_media_key(p: Mapping[str, str]) -> str | None:
    if _valid(CHANNEL, p.get("channel")) and _valid(RENDITION, p.get("rendition")):
        return keys.live_media_key(p["channel"], p["rendition"])
    return None


def live_segment_key(p: Mapping[str, str]) -> str | None:
    if (
        _valid(CHANNEL, p.get("channel"))
        and _valid(RENDITION, p.get("rendition"))
        and _valid(STREAM_ID, p.get("stream_id"))
        and _valid(SEQ, p.get("seq"))
    ):
        return keys.segment_key(p["stream_id"], p["rendition"], p["seq"])
    return None


def live_cmaf_key(p: Mapping[str, str]) -> str | None:
    if (
        _valid(CHANNEL, p.get("channel"))
        and _valid(RENDITION, p.get("rendition"))
        and _valid(STREAM_ID, p.get("stream_id"))
        and _valid(CMAF_NAME, p.get("name"))
    ):
        return keys.cmaf_key(p["stream_id"], p["rendition"], p["name"])
    return None


def vod_master_key(p: Mapping[str, str]) -> str | None:
    if _valid(STREAM_ID, p.get("stream_id")):
        return keys.vod_master_key(p["stream_id"])
    return None


def vod_media_key(p: Mapping[str, str]) -> str | None:
    if _valid(STREAM_ID, p.get("stream_id")) and _valid(RENDITION, p.get("rendition")):
        return keys.vod_media_key(p["stream_id"], p["rendition"])
    return None


def vod_segment_key(p: Mapping[str, str]) -> str | None:
    if (
        _valid(STREAM_ID, p.get("stream_id"))
        and _valid(RENDITION, p.get("rendition"))
        and _valid(SEQ, p.get("seq"))
    ):
        return keys.segment_key(p["stream_id"], p["rendition"], p["seq"])
    return None


def vod_cmaf_key(p: Mapping[str, str]) -> str | None:
    if (
        _valid(STREAM_ID, p.get("stream_id"))
        and _valid(RENDITION, p.get("rendition"))
        and _valid(VOD_CMAF_NAME, p.get("name"))
    ):
        return keys.cmaf_key(p["stream_id"], p["rendition"], p["name"])
    return None


def vod_file_key(p: Mapping[str, str]) -> str | None:
    if _valid(STREAM_ID, p.get("stream_id")) and _valid(VOD_FILE, p.get("file")):
        return keys.vod_key(p["stream_id"], p["file"])
    return None


class RangeNotSatisfiable(Exception):
    pass


_BYTES_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as inclusive `(first, last)`; None means "send it all" (no usable
    range: malformed, several ranges, another unit). Raises RangeNotSatisfiable (416)."""
    match = _BYTES_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: `W/"x"` matches `"x"`; `*` matches anything."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@dataclass(frozen=True, slots=True)
class OriginRoute:
    path: str
    key_for: KeyRule
    ranges: bool = False
    waits: bool = False  # a missing object may be a hinted part: ask the part waiter


ORIGIN_ROUTES: tuple[OriginRoute, ...] = (
    OriginRoute("/live/{channel}/master.m3u8", live_master_key),
    OriginRoute("/live/{channel}/{rendition}/index.m3u8", live_media_key),
    OriginRoute("/live/{channel}/{rendition}/{stream_id}/{seq}.ts", live_segment_key),
    OriginRoute("/live/{channel}/{rendition}/{stream_id}/{name}", live_cmaf_key, waits=True),
    OriginRoute("/vod/{stream_id}/master.m3u8", vod_master_key),
    OriginRoute("/vod/{stream_id}/{rendition}/index.m3u8", vod_media_key),
    OriginRoute("/vod/{stream_id}/{rendition}/{seq}.ts", vod_segment_key),
    OriginRoute("/vod/{stream_id}/{rendition}/{name}", vod_cmaf_key),
    OriginRoute("/vod/{stream_id}/{file}", vod_file_key, ranges=True),
)


def _not_found() -> Response:
    headers = {**CORS_HEADERS, "cache-control": "no-cache"}
    return Response("Not Found", status_code=404, media_type="text/plain", headers=headers)


class HlsOrigin:
    """The origin's routes, reading through one `ObjectCache`."""

    def __init__(self, cache: ObjectCache, part_waiter: PartWaiter | None = None) -> None:
        self.cache = cache
        self.part_waiter = part_waiter

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(
                spec.path,
                self._endpoint(spec),
                methods=["GET", "HEAD", "OPTIONS"],
                name=f"hls:{spec.key_for.__name__.removesuffix('_key')}",
            )
            for spec in ORIGIN_ROUTES
        ]

    def _endpoint(self, spec: OriginRoute) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            key = self.key_for(request, spec.key_for)
            if key is None:
                return _not_found()
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=PREFLIGHT_HEADERS)
            try:
                if spec.ranges:
                    found = await self.cache.get_or_head(key)
                    if isinstance(found, ObjectInfo):
                        return self.respond_large(request, found)
                    return self.respond(request, found, ranges=True)
                obj = await self.cache.get(key)
            except ObjectNotFound:
                if not spec.waits or self.part_waiter is None:
                    return _not_found()
                waited = await self._waited(key)
                if waited is None:
                    return _not_found()
                obj = waited
            return self.respond(request, obj, ranges=spec.ranges)

        return endpoint

    async def _waited(self, key: str) -> StoredObject | None:
        """A preload-hinted part requested before it exists: the answer once its event
        says it is durable (one store read for every viewer waiting), else None."""
        assert self.part_waiter is not None
        if not await self.part_waiter(key):
            return None
        for _ in range(2):  # a read that began before the part was written may say 404
            self.cache.forget_missing(key)
            try:
                return await self.cache.get(key)
            except ObjectNotFound:
                await asyncio.sleep(0.05)
        return None

    @staticmethod
    def key_for(request: Request, rule: KeyRule) -> str | None:
        raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
        if b"%" in raw_path or b"\\" in raw_path:
            return None
        params = {name: str(value) for name, value in request.path_params.items()}
        key = rule(params)
        if key is None:
            return None
        try:
            return check_key(key)
        except StoreError:
            return None

    @staticmethod
    def respond(request: Request, obj: StoredObject, *, ranges: bool) -> Response:
        info = ObjectInfo(obj.key, len(obj.body), "", obj.cache_control, obj.etag)
        answer = _answer(request, info, ranges=ranges)
        if isinstance(answer, Response):
            return answer
        (first, last), status, headers = answer
        body = obj.body if status == 200 else obj.body[first : last + 1]
        media_type = content_type_for(obj.key)
        if request.method == "HEAD":
            headers["content-length"] = str(len(body))
            return Response(b"", status_code=status, media_type=media_type, headers=headers)
        return Response(body, status_code=status, media_type=media_type, headers=headers)

    def respond_large(self, request: Request, info: ObjectInfo) -> Response:
        """An object too large for the cache (a VOD's MP4): the requested span read from the
        store in ranged reads of `LARGE_READ_BYTES`, streamed, never held whole."""
        answer = _answer(request, info, ranges=True)
        if isinstance(answer, Response):
            return answer
        (first, last), status, headers = answer
        media_type = content_type_for(info.key)
        headers["content-length"] = str(max(0, last - first + 1))
        if request.method == "HEAD":
            return Response(b"", status_code=status, media_type=media_type, headers=headers)
        store = self.cache.store

        async def chunks() -> AsyncIterator[bytes]:
            position = first
            while position <= last:
                end = min(last, position + LARGE_READ_BYTES - 1)
                yield await asyncio.to_thread(store.get_range, info.key, position, end)
                position = end + 1

        return StreamingResponse(
            chunks(), status_code=status, media_type=media_type, headers=headers
        )


def object_headers(cache_control: str, etag: str, *, ranges: bool) -> dict[str, str]:
    """What every answer of an object carries (its 200, 206, 304 and 416 alike)."""
    headers = {
        **CORS_HEADERS,
        "cache-control": cache_control or DEFAULT_CACHE_CONTROL,
        "etag": f'"{etag}"',
    }
    if ranges:
        headers["accept-ranges"] = "bytes"
    return headers


def _answer(
    request: Request, info: ObjectInfo, *, ranges: bool
) -> Response | tuple[tuple[int, int], int, dict[str, str]]:
    """The conditional and range logic shared by cached and large objects: a finished
    response (304, 416), or the inclusive span to send with its status and headers."""
    headers = object_headers(info.cache_control, info.etag, ranges=ranges)
    etag = headers["etag"]
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    span, status = (0, info.size - 1), 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if ranges and range_header is not None and (if_range is None or if_range == etag):
        try:
            requested = parse_range(range_header, info.size)
        except RangeNotSatisfiable:
            headers["content-range"] = f"bytes */{info.size}"
            return Response(status_code=416, headers=headers)
        if requested is not None:
            span, status = requested, 206
            headers["content-range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
    return span, status, headers


class FastLane:
    """A plain GET of an object the cache holds fresh (a live playlist, a segment, a part; the
    requests LL-HLS viewers make by the thousand), answered without the Request, routing and
    endpoint layers — the same status, headers and body the route sends
    (tests/unit/origin/test_fast_lane.py holds them equal). Two doors use it: `FastLaneAsgi`,
    middleware in front of the router on every port, and the HTTP/1.1 listener's protocol,
    before any ASGI machinery at all (gateway/http/listen.py). Anything else goes on to the
    app: HEAD, OPTIONS, a conditional or ranged request, a byte-range route, a
    percent-encoded path, an object not fresh in the cache."""

    _PASS_HEADERS = frozenset({b"range", b"if-none-match", b"if-range"})
    _MAX_HEADS = 8192  # header blocks remembered (one per object served fast)
    _MAX_PATHS = 8192  # paths remembered with their route and key (or as not the lane's)

    def __init__(self, origin: HlsOrigin) -> None:
        self.cache = origin.cache
        self.lanes = [
            (spec, route)
            for spec, route in zip(ORIGIN_ROUTES, origin.routes, strict=True)
            if not spec.ranges and isinstance(route, Route)
        ]
        self._heads: dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]] = {}
        self._paths: dict[str, tuple[Route, str] | None] = {}

    def hit(
        self, path: str, raw_path: bytes, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[Route, StoredObject] | None:
        """The route and the cached object when this GET is the fast lane's, else None."""
        if not path.startswith(("/live/", "/vod/")):
            return None
        if b"%" in raw_path or b"\\" in raw_path:
            return None
        if any(name in self._PASS_HEADERS for name, _ in headers):
            return None
        try:
            found = self._paths[path]
        except KeyError:
            found = self._route(path)
            if len(self._paths) >= self._MAX_PATHS:
                self._paths.clear()
            self._paths[path] = found
        if found is None:
            return None
        route, key = found
        obj = self.cache.peek(key)
        return None if obj is None else (route, obj)

    def _route(self, path: str) -> tuple[Route, str] | None:
        """The route and the object key of a path, or None (not the fast lane's)."""
        for spec, route in self.lanes:
            match = route.path_regex.match(path)
            if match is None:
                continue
            key = spec.key_for(match.groupdict())
            if key is None:
                return None
            try:
                return route, check_key(key)
            except StoreError:
                return None
        return None

    def headers(self, obj: StoredObject) -> list[tuple[bytes, bytes]]:
        """The 200's headers, as the route's `Response` builds them (ASGI form)."""
        return self._head(obj)[1]

    def header_lines(self, obj: StoredObject) -> bytes:
        """The same headers as HTTP/1.1 header lines, each ending in CRLF."""
        return self._head(obj)[2]

    def _head(self, obj: StoredObject) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
        found = self._heads.get(obj.key)
        if found is not None and found[0] == obj.etag:
            return found
        headers = object_headers(obj.cache_control, obj.etag, ranges=False)
        raw = Response(obj.body, media_type=content_type_for(obj.key), headers=headers).raw_headers
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in raw)
        if len(self._heads) >= self._MAX_HEADS:
            self._heads.clear()
        found = self._heads[obj.key] = (obj.etag, raw, lines)
        return found


class FastLaneAsgi:
    """ASGI middleware in front of the router: `FastLane`'s answers, counted under their
    route by the metrics middleware outside it."""

    def __init__(self, app: ASGIApp, lane: FastLane) -> None:
        self.app = app
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            hit = self.lane.hit(path, scope.get("raw_path") or path.encode(), scope["headers"])
            if hit is not None:
                route, obj = hit
                scope["route"] = route  # the metrics middleware's label
                await send({"type": "http.response.start", "status": 200,
                            "headers": self.lane.headers(obj)})  # fmt: skip
                await send({"type": "http.response.body", "body": obj.body})
                return
        await self.app(scope, receive, send)
