"""The gateway's HTTP/1.1 listener as `onair http` configures it (uvicorn, httptools, the head
bound), served on a free loopback port: a hostile client's endless request head is refused
with 400 as its bytes arrive; ordinary requests, keep-alive ones included, are served."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from starlette.types import Receive, Scope, Send

from gateway.http.listen import MAX_HEAD_BYTES, Listeners, uvicorn_config
from tests.served import uvicorn_thread


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def port() -> Iterator[int]:
    config = uvicorn_config(hello, Listeners(host="127.0.0.1", http_port=0))
    config.lifespan = "off"
    with uvicorn_thread(config) as served:
        yield served


def request(header_bytes: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: onair\r\nX-Pad: " + b"a" * header_bytes + b"\r\n\r\n"


def read_answer(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"large.")):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_ordinary_head_is_served_and_keep_alive_heads_are_bounded_each(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(3):  # three heads of 40 KiB: more than the bound together, each under
            conn.sendall(request(40 * 1024))
            assert read_answer(conn).startswith(b"HTTP/1.1 200 ")


def test_an_endless_head_is_refused_before_it_ends(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: onair\r\nX-Pad: ")
        sent = 0
        answer = b""
        while sent < 64 * MAX_HEAD_BYTES:  # never ends the header: only the bound answers
            try:
                conn.sendall(b"a" * 16384)
            except OSError:
                break  # closed by the server
            sent += 16384
            conn.setblocking(False)
            try:
                answer += conn.recv(65536)
            except BlockingIOError:
                pass
            finally:
                conn.setblocking(True)
            if answer:
                break
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            answer += conn.recv(65536)
    # the header never ends: an answer at all is a refusal while it was still arriving
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Request head too large." in answer
