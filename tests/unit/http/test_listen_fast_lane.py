"""The HTTP/1.1 listener answers the origin's cache hits in its protocol, before ASGI: served
by a real uvicorn on a loopback port with the gateway's app and a real LocalStore, the answer
must be byte for byte the route's (but for the Date header), pipelined requests must come
back in the order they were sent whichever path answered each, and anything that is not a
plain keep-alive GET of a fresh cached object must still be the app's."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

from gateway.http.app import create_app
from gateway.http.listen import Listeners, uvicorn_config
from gateway.origin.cache import CacheConfig
from gateway.origin.hls import FastLaneAsgi, HlsOrigin
from tests.served import uvicorn_thread
from tests.unit.http.conftest import CountingStore
from tests.unit.origin.test_hls import STREAM, fill

PLAYLIST = "/live/demo/720p30/index.m3u8"
SEGMENT = f"/live/demo/720p30/{STREAM}/000042.ts"
MASTER = "/live/demo/master.m3u8"


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Which layer answered: the route (`respond`), the ASGI fast lane, or neither of them
    (the listener's protocol)."""
    seen: dict[str, list[str]] = {"route": [], "asgi": []}
    respond = HlsOrigin.respond
    asgi_call = FastLaneAsgi.__call__

    def route(request: Any, obj: Any, *, ranges: bool) -> Any:
        seen["route"].append(request.url.path)
        return respond(request, obj, ranges=ranges)

    async def asgi(self: FastLaneAsgi, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen["asgi"].append(scope["path"])
        await asgi_call(self, scope, receive, send)

    monkeypatch.setattr(HlsOrigin, "respond", staticmethod(route))
    monkeypatch.setattr(FastLaneAsgi, "__call__", asgi)
    return seen


@pytest.fixture
def port(tmp_path: Any) -> Iterator[int]:
    store = CountingStore(tmp_path / "store")
    fill(store)
    app: Starlette = create_app(store, cache_config=CacheConfig(ttl_s=60, negative_ttl_s=60))
    with uvicorn_thread(uvicorn_config(app, Listeners(host="127.0.0.1", http_port=0))) as served:
        yield served


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: onair", *extra, "", ""]
    return "\r\n".join(lines).encode()


def read_answers(conn: socket.socket, count: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """`count` answers: (status line, headers, body), read by their Content-Length."""
    data = b""
    answers: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines)
        length = int(headers.get(b"content-length", b"0"))
        while len(data) < length:
            chunk = conn.recv(65536)
            assert chunk, "connection closed inside a body"
            data += chunk
        answers.append((status, headers, data[:length]))
        data = data[length:]
    return answers


def head_lines(raw: bytes) -> list[bytes]:
    return [line for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line[:5] != b"date:"]


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = read_answers(conn, 1)[0]
    status, headers, body = answer
    return (
        status
        + b"\r\n"
        + b"\r\n".join(k + b": " + v for k, v in headers.items())
        + (b"\r\n\r\n" + body)
    )


@pytest.mark.parametrize("path", [PLAYLIST, SEGMENT, MASTER])
def test_a_cache_hit_is_the_routes_answer_byte_for_byte(
    port: int, answered: dict[str, list[str]], path: str
) -> None:
    first = exchange(port, get(path))
    assert answered["route"] == [path], "the first GET (a miss) is the route's"
    second = exchange(port, get(path))
    assert answered["route"] == [path] and answered["asgi"] == [path], (
        "the second GET (a hit) never reached the app"
    )
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head_lines(second) == head_lines(first)
    assert second.split(b"\r\n\r\n", 1)[1] == first.split(b"\r\n\r\n", 1)[1]
    assert re.search(rb"\r\ndate: [A-Z][a-z]{2}, ", second), "the Date header is still sent"


def test_pipelined_requests_come_back_in_order_whichever_path_answers(
    port: int, answered: dict[str, list[str]]
) -> None:
    exchange(port, get(PLAYLIST))  # cached now; the master and the segment are not
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # a miss the app answers (a task), then a hit, then another miss and another hit:
        # the hits must wait their turn behind the misses
        conn.sendall(get(MASTER) + get(PLAYLIST) + get(SEGMENT) + get(PLAYLIST) + get(MASTER))
        answers = read_answers(conn, 5)
        bodies = [body for _, _, body in answers]
        assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 5
        assert bodies[0] == bodies[4] == b"#EXTM3U\n#master\n"
        assert bodies[1] == bodies[3] == b"#EXTM3U\n#media 720p30\n"
        assert bodies[2] == b"\x47" * 188 * 4
        conn.sendall(get(PLAYLIST))  # the connection is still usable
        assert read_answers(conn, 1)[0][2] == b"#EXTM3U\n#media 720p30\n"
    assert answered["route"].count(MASTER) == 1 and answered["route"].count(SEGMENT) == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get(PLAYLIST, method="HEAD"), b"HTTP/1.1 200 OK"),
        (get(PLAYLIST, "If-None-Match: *"), b"HTTP/1.1 304 Not Modified"),
        (get(PLAYLIST, "Connection: close"), b"HTTP/1.1 200 OK"),
        (get(PLAYLIST, version="1.0"), b"HTTP/1.1 200 OK"),
    ],
    ids=["head", "conditional", "connection-close", "http-1.0"],
)
def test_what_is_not_a_plain_keep_alive_get_is_the_apps(
    port: int, answered: dict[str, list[str]], request_bytes: bytes, status: bytes
) -> None:
    exchange(port, get(PLAYLIST))  # cached: only the request's form keeps it from the protocol
    before = len(answered["asgi"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request_bytes)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk
            data += chunk
    assert data.split(b"\r\n", 1)[0] == status
    assert len(answered["asgi"]) == before + 1, "the app saw the request"


def test_the_metrics_count_the_listeners_answers_under_the_route(port: int) -> None:
    for _ in range(3):
        exchange(port, get(PLAYLIST))
    metrics = exchange(port, get("/metrics")).decode()
    line = 'onair_http_requests_total{route="/live/{channel}/{rendition}/index.m3u8",status="200"}'
    assert f"{line} 3.0" in metrics
    histogram = (
        'onair_http_request_duration_seconds_count{route="/live/{channel}/{rendition}/index.m3u8"}'
    )
    assert f"{histogram} 3.0" in metrics
