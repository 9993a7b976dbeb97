"""The player pages (`/watch/<channel>`, `/vod/<stream_id>`) and their static assets.

Assets are read once at start-up and addressed as `/static/<name>?v=<content hash>`, so the
pages can let browsers keep them for a year: a new build changes the hash and the URL.
`hls.min.js` comes from the `hls.js` npm package (`npm ci` copies it into `static/`); a checkout
that only ran `npm ci` is served straight from `node_modules/`. Without it the page falls back
to the browser's own HLS (Safari). `abr.js` is onair's ABR controller (the twin of
pipeline/abr/live.py) that `player.js` gives hls.js; `?abr=hlsjs` keeps hls.js's own, and
the Stats button (or `?stats=1`) shows rung, bandwidth estimate, buffer and latency.

Other parts of the gateway can add scripts to the page (`extra_scripts`): the chat client
finds its mount point in `<div id="chat" data-channel=… data-ws-path=…>`.

A VOD page whose stream the catalog knows (`vod_lookup`, the `onair.vods` table) replays the
stream's chat: its config carries `replay` (the channel, the stream's `started_ms`,
`ended_ms` and `duration_ms`), the panel is `<div id="chat" data-mode="replay" …>` with no
WebSocket, and `replay.js` (the windowed fetch and the schedule, pure) with `chat_replay.js`
(the read-only panel) run it. Media time 0 is the VOD playlist's first PROGRAM-DATE-TIME,
each run after a discontinuity has its own (what `workers/vod/timeline.py` writes), so the
panel reads the origin from the playlist hls.js loaded; `started_ms` is the fallback for a
playlist without date-times, and messages sent between going live and the first frame show
at 0. `/watch/vod/<stream_id>` redirects to `/vod/<stream_id>`.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.origin.hls import CHANNEL, STREAM_ID, etag_matches

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_REPO_ROOT = Path(__file__).resolve().parents[2]
HLS_JS_FALLBACK = _REPO_ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=60"
REPLAY_SCRIPTS = ("replay.js", "chat_replay.js")
_ASSET_NAME = re.compile(r"[a-z0-9_\-]{1,64}(?:\.[a-z0-9]{1,8}){1,3}")
_ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self' ws: wss:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    )
)


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    version: str

    @property
    def url(self) -> str:
        return f"/static/{self.name}?v={self.version}"


def load_assets(static_dir: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every servable file in `static_dir`, plus hls.min.js from node_modules if not copied."""
    paths = {p.name: p for p in sorted(static_dir.iterdir()) if p.is_file()}
    if "hls.min.js" not in paths and HLS_JS_FALLBACK.is_file():
        paths["hls.min.js"] = HLS_JS_FALLBACK
    assets: dict[str, Asset] = {}
    for name, path in paths.items():
        content_type = _ASSET_TYPES.get(path.suffix)
        if content_type is None or not _ASSET_NAME.fullmatch(name):
            continue
        body = path.read_bytes()
        version = hashlib.sha256(body).hexdigest()[:16]
        assets[name] = Asset(name, body, content_type, version)
    if "hls.min.js" not in assets:
        logger.warning("hls.min.js not found (run npm ci): the player needs native HLS")
    return assets


def _json_for_script(value: object) -> str:
    """JSON safe inside <script>: no `<`, `>` or `&` can close the element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


VodLookup = Callable[[str], Mapping[str, Any] | None]


def replay_config(vod: Mapping[str, Any]) -> dict[str, Any]:
    """What the VOD page's chat replay needs from a catalog record (`Vod`)."""
    return {
        "channel": str(vod["channel"]),
        "stream_id": str(vod["stream_id"]),
        "started_ms": int(vod.get("started_ms") or 0),
        "ended_ms": int(vod.get("ended_ms") or 0),
        "duration_ms": int(vod.get("duration_ms") or 0),
    }


class PlayerPages:
    def __init__(
        self,
        *,
        assets: dict[str, Asset] | None = None,
        extra_scripts: Sequence[str] = (),
        vod_lookup: VodLookup | None = None,
        low_latency: bool = False,
    ) -> None:
        """`vod_lookup(stream_id)`: the VOD's catalog record or None (no chat replay then).
        `low_latency`: the gateway serves LL-HLS (`/live/<channel>/ll.m3u8`): live pages play
        it in hls.js's low-latency mode, unless the URL says `?ll=0` (the classic playlists)."""
        self.low_latency = low_latency
        self.assets = load_assets() if assets is None else assets
        self.extra_scripts = tuple(extra_scripts)
        self.vod_lookup = vod_lookup

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/watch/{channel}", self.watch, methods=["GET", "HEAD"], name="player:watch"),
            Route("/watch/vod/{stream_id}", self.watch_vod, methods=["GET", "HEAD"]),
            Route("/vod/{stream_id}", self.vod, methods=["GET", "HEAD"], name="player:vod"),
            Route("/static/{name}", self.static, methods=["GET", "HEAD"], name="player:static"),
        ]

    async def watch(self, request: Request) -> Response:
        channel = str(request.path_params["channel"])
        if not CHANNEL.fullmatch(channel):
            return PlainTextResponse("Not Found", status_code=404)
        low_latency = self.low_latency and request.query_params.get("ll") != "0"
        return self.page(
            title=channel,
            kind="live",
            src=f"/live/{channel}/ll.m3u8" if low_latency else f"/live/{channel}/master.m3u8",
            channel=channel,
            low_latency=low_latency,
        )

    async def watch_vod(self, request: Request) -> Response:
        """`/watch/vod/<stream_id>` (beside `/watch/<channel>`): the VOD page's other name."""
        stream_id = str(request.path_params["stream_id"])
        if not STREAM_ID.fullmatch(stream_id):
            return PlainTextResponse("Not Found", status_code=404)
        query = request.url.query
        return RedirectResponse(f"/vod/{stream_id}" + (f"?{query}" if query else ""), 308)

    async def vod(self, request: Request) -> Response:
        stream_id = str(request.path_params["stream_id"])
        if not STREAM_ID.fullmatch(stream_id):
            return PlainTextResponse("Not Found", status_code=404)
        vod = self.vod_lookup(stream_id) if self.vod_lookup is not None else None
        return self.page(
            title=stream_id,
            kind="vod",
            src=f"/vod/{stream_id}/master.m3u8",
            channel=None,
            replay=replay_config(vod) if vod is not None else None,
        )

    def page(
        self,
        *,
        title: str,
        kind: str,
        src: str,
        channel: str | None,
        replay: Mapping[str, Any] | None = None,
        low_latency: bool = False,
    ) -> Response:
        """`channel`: the live chat's; `replay`: a VOD's chat replay (`replay_config`)."""
        config: dict[str, Any] = {"kind": kind, "src": src, "channel": channel, "title": title}
        if low_latency:
            config["lowLatency"] = True
        names = ["hls.min.js", "abr.js", "player.js"]
        if replay is not None:
            config["replay"] = dict(replay)
            names.extend(REPLAY_SCRIPTS)
        scripts = [a.url for n in names if (a := self.assets.get(n))]
        scripts.extend(self.extra_scripts)
        chat_attrs = ""
        if channel is not None:
            chat_attrs = (
                f' data-channel="{html.escape(channel)}"'
                f' data-ws-path="{html.escape(f"/chat/{channel}")}"'
            )
        elif replay is not None:
            chat_attrs = (
                f' data-mode="replay" data-channel="{html.escape(str(replay["channel"]))}"'
                ' aria-label="Chat replay"'
            )
        css = self.assets.get("player.css")
        body = _PAGE.format(
            title=html.escape(title),
            kind=html.escape(kind),
            css=f'<link rel="stylesheet" href="{html.escape(css.url)}">' if css else "",
            config=_json_for_script(config),
            chat_attrs=chat_attrs,
            scripts="\n".join(f'<script src="{html.escape(url)}"></script>' for url in scripts),
        )
        headers = {
            "cache-control": "no-cache",
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
        }
        return HTMLResponse(body, headers=headers)

    async def static(self, request: Request) -> Response:
        asset = self.assets.get(str(request.path_params["name"]))
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404)
        etag = f'"{asset.version}"'
        versioned = request.query_params.get("v") == asset.version
        headers = {
            "cache-control": IMMUTABLE if versioned else REVALIDATE,
            "etag": etag,
            "x-content-type-options": "nosniff",
        }
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["content-length"] = str(len(asset.body))
            return Response(b"", media_type=asset.content_type, headers=headers)
        return Response(asset.body, media_type=asset.content_type, headers=headers)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · onair</title>
<link rel="icon" href="data:,">
{css}
</head>
<body data-kind="{kind}">
<main class="layout">
  <section class="stage">
    <div class="screen">
      <video id="video" controls autoplay muted playsinline></video>
      <div id="status" class="status" hidden></div>
      <dl id="stats" class="stats" aria-live="off" hidden></dl>
    </div>
    <div class="bar">
      <h1 class="title">{title}</h1>
      <button id="live-edge" class="live-edge" type="button" data-at-edge="false" hidden
        title="Jump to the live edge">LIVE</button>
      <span class="spacer"></span>
      <label class="quality">Quality
        <select id="quality" aria-label="Quality"><option value="-1">Auto</option></select>
      </label>
      <span id="current-level" class="current-level" aria-live="polite"></span>
      <button id="stats-toggle" class="stats-toggle" type="button" aria-controls="stats"
        aria-pressed="false" title="Playback stats: rung, bandwidth, buffer, latency">Stats</button>
    </div>
  </section>
  <div id="chat" class="chat"{chat_attrs}></div>
</main>
<script id="onair-config" type="application/json">{config}</script>
{scripts}
</body>
</html>
"""
