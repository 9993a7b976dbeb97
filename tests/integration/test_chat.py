"""Chat against the real broker: two chat server processes (tests/integration/chat_server.py)
sharing Kafka, real WebSocket clients.

Each test uses its own channel name, so the fixed topics can hold any number of runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.chat.partitioner import partition_for
from pipeline.tokens import issue_token
from schemas.codec import Codec
from tests.integration.chat_server import spawn
from topics.admin import ensure_topics
from topics.client import make_consumer
from topics.specs import CHAT, all_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
TOKEN_SECRET = secrets.token_urlsafe(16)
ADMIN_TOKEN = secrets.token_urlsafe(16)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChatServer:
    """One `chat_server` process; `restart()` kills it hard and starts it on the same port."""

    bootstrap: str
    log_path: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, channel: str) -> str:
        return f"ws://127.0.0.1:{self.port}/chat/{channel}"

    def start(self) -> None:
        self.proc = spawn(
            self.port, self.bootstrap, TOKEN_SECRET, ADMIN_TOKEN, self.log_path, "--log-level=info"
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def servers(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ChatServer, ChatServer]]:
    ensure_topics(kafka_bootstrap, all_topics())
    logs = tmp_path_factory.mktemp("chat-logs")
    pair = (
        ChatServer(kafka_bootstrap, logs / "a.log"),
        ChatServer(kafka_bootstrap, logs / "b.log"),
    )
    try:
        for server in pair:
            server.start()
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture
def channel() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class Client:
    """A WebSocket client that records every frame it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        self.closed = True
        self.close_code = self.ws.close_code
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Client], bool], timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out; frames: {self.frames[-5:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    def messages(self) -> list[dict[str, Any]]:
        return [m for f in self.of("batch") for m in f["messages"]]

    async def request(self, frame: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """Send a frame with a fresh nonce and wait for the reply carrying it."""
        if isinstance(frame, dict):
            nonce = uuid.uuid4().hex[:8]
            await self.ws.send(json.dumps({**frame, "nonce": nonce}))

            def replied(c: Client) -> bool:
                return any(f.get("nonce") == nonce for f in c.frames)

            await self.wait_for(replied)
            return next(f for f in self.frames if f.get("nonce") == nonce)
        count = len(self.of("error"))
        await self.ws.send(frame)
        await self.wait_for(lambda c: len(c.of("error")) > count)
        return self.of("error")[-1]

    async def auth(self, user: str) -> None:
        reply = await self.request({"type": "auth", "token": issue_token(TOKEN_SECRET, user)})
        assert reply["type"] == "authed", reply

    async def say(self, text: str) -> dict[str, Any]:
        return await self.request({"type": "send", "text": text})


@contextlib.asynccontextmanager
async def client(url: str, user: str | None = None) -> AsyncIterator[Client]:
    async with connect(url, max_size=2**22) as ws:
        chat = Client(ws)
        await chat.wait_for(lambda c: bool(c.of("welcome")))
        if user is not None:
            await chat.auth(user)
        yield chat


def produced(bootstrap: str, channel: str, since_ms: int) -> list[dict[str, Any]]:
    """Every ChatMessage of `channel` in its partition since `since_ms`, read from Kafka."""
    codec = Codec()
    consumer = make_consumer(bootstrap, None)
    try:
        partitions = consumer.list_topics(CHAT, timeout=10).topics[CHAT].partitions
        partition = partition_for(channel.encode(), len(partitions))
        tp = TopicPartition(CHAT, partition, since_ms - 5000)
        [start] = consumer.offsets_for_times([tp], timeout=10)
        _low, high = consumer.get_watermark_offsets(TopicPartition(CHAT, partition), timeout=10)
        found: list[dict[str, Any]] = []
        if start.offset < 0 or start.offset >= high:
            return found
        consumer.assign([TopicPartition(CHAT, partition, start.offset)])
        while True:
            msg = consumer.poll(5.0)
            assert msg is not None, "the partition ended early"
            if msg.error() is None and msg.key() == channel.encode():
                found.append(codec.expect("ChatMessage", msg.value()))
            if (msg.offset() or 0) >= high - 1:
                return found
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------


async def test_message_reaches_viewers_on_both_servers_once_and_in_order(
    servers: tuple[ChatServer, ChatServer], channel: str
) -> None:
    a, b = servers
    async with contextlib.AsyncExitStack() as stack:
        viewers = [await stack.enter_async_context(client(s.ws(channel))) for s in (a, a, b, b)]
        alice = await stack.enter_async_context(client(a.ws(channel), "alice"))
        bob = await stack.enter_async_context(client(b.ws(channel), "bob"))
        acked = []
        for i in range(3):
            for sender, name in ((alice, "alice"), (bob, "bob")):
                reply = await sender.say(f"{name} {i}")
                assert reply["type"] == "ack", reply
                acked.append(reply["id"])
        everyone = [*viewers, alice, bob]
        for viewer in everyone:
            await viewer.wait_for(lambda c: len(c.messages()) >= 6)
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive by now
        sequences = [[m["id"] for m in v.messages()] for v in everyone]
        assert all(seq == sequences[0] for seq in sequences)
        assert sorted(sequences[0]) == sorted(acked)  # exactly once each
        texts = [m["text"] for m in viewers[0].messages()]
        assert [t for t in texts if t.startswith("alice")] == ["alice 0", "alice 1", "alice 2"]
        assert [t for t in texts if t.startswith("bob")] == ["bob 0", "bob 1", "bob 2"]
        first = viewers[0].messages()[0]
        assert set(first) == {"type", "id", "channel", "user", "text", "ts"}
        assert first["channel"] == channel


async def test_refused_messages_get_errors_and_are_never_produced(
    servers: tuple[ChatServer, ChatServer], channel: str, kafka_bootstrap: str
) -> None:
    a, _b = servers
    started_ms = int(time.time() * 1000)
    async with client(a.ws(channel), "carol") as carol:
        replies = [await carol.say(f"burst {i}") for i in range(5)]
        assert [r["type"] for r in replies] == ["ack", "ack", "ack", "error", "error"]
        assert {r["code"] for r in replies[3:]} == {"rate_limited"}
        assert all(0 < r["retry_after_ms"] <= 1000 for r in replies[3:])
        await asyncio.sleep(1.1)
        assert (await carol.say("BURST  2"))["code"] == "duplicate"
        assert (await carol.say("x" * 501))["code"] == "text_too_long"
        assert (await carol.say(" \n\t "))["code"] == "text_empty"
        assert not carol.closed
    acked = [r["id"] for r in replies[:3]]
    stored = produced(kafka_bootstrap, channel, started_ms)
    assert [m["id"] for m in stored] == acked
    assert [m["text"] for m in stored] == ["burst 0", "burst 1", "burst 2"]


async def test_moderation_on_one_server_applies_on_the_other(
    servers: tuple[ChatServer, ChatServer], channel: str, tmp_path: Path
) -> None:
    a, b = servers
    async with (
        client(b.ws(channel), "mallory") as mallory,
        client(b.ws(channel)) as watcher,
        httpx.AsyncClient() as http,
    ):
        first = await mallory.say("hello")
        assert first["type"] == "ack"
        assert (
            await http.post(f"{a.http}/api/moderation/{channel}/ban", json={})
        ).status_code == 401
        started = time.monotonic()
        response = await http.post(
            f"{a.http}/api/moderation/{channel}/ban",
            json={"user": "Mallory", "reason": "spam"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        assert response.json()["user"] == "mallory"
        while True:
            state = (await http.get(f"{b.http}/api/moderation/{channel}")).json()
            if [ban["user"] for ban in state["bans"]] == ["mallory"]:
                break
            assert time.monotonic() - started < 1.0, "ban not applied on the other server in 1 s"
            await asyncio.sleep(0.02)
        refused = await mallory.say("still here")
        assert refused["code"] == "banned"
        await watcher.wait_for(lambda c: any(n["code"] == "user_banned" for n in c.of("notice")))

        # the CLI stores actions the same way: unban from the command line
        env = {
            **os.environ,
            "ONAIR_KAFKA_BOOTSTRAP": a.bootstrap,
            "ONAIR_STATE_DIR": str(tmp_path),
        }
        cli = [sys.executable, "-m", "onair.cli", "mod", "unban", channel, "mallory"]
        done = await asyncio.to_thread(
            subprocess.run, cli, env=env, cwd=ROOT, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        await watcher.wait_for(lambda c: any(n["code"] == "user_unbanned" for n in c.of("notice")))
        assert (await mallory.say("I am back"))["type"] == "ack"

        # delete: viewers are told, history leaves the message out
        deleted = first["id"]
        response = await http.post(
            f"{a.http}/api/moderation/{channel}/delete", json={"message_id": deleted}, headers=ADMIN
        )
        assert response.status_code == 200
        await watcher.wait_for(
            lambda c: any(n.get("id") == deleted for n in c.of("notice")), timeout_s=5
        )
        history = (await http.get(f"{b.http}/api/chat/{channel}")).json()
        assert deleted not in [m["id"] for m in history["messages"]]
        assert [m["text"] for m in history["messages"]] == ["I am back"]

        # slow mode set on A holds on B
        response = await http.post(
            f"{a.http}/api/moderation/{channel}/slow", json={"seconds": 30}, headers=ADMIN
        )
        assert response.status_code == 200
        await watcher.wait_for(lambda c: any(n["code"] == "slow_mode" for n in c.of("notice")))
        slowed = await mallory.say("too soon")
        assert slowed["code"] == "slow_mode" and slowed["retry_after_ms"] > 25_000


async def test_malformed_and_oversized_frames_get_errors_and_others_are_served(
    servers: tuple[ChatServer, ChatServer], channel: str
) -> None:
    a, b = servers
    async with (
        client(a.ws(channel)) as anon,
        client(a.ws(channel), "dave") as dave,
        client(b.ws(channel)) as bystander,
    ):
        cases: list[tuple[dict[str, Any] | str | bytes, str]] = [
            ("not json", "bad_frame"),
            ("[1, 2]", "bad_frame"),
            ("[" * 5000, "bad_frame"),
            (b"\x00\x01binary", "bad_frame"),
            ("x" * 20_000, "frame_too_large"),
            ({"type": "dance"}, "bad_frame"),
            ({"type": "send"}, "bad_frame"),
            ({"type": "send", "text": 42}, "bad_frame"),
            ({"type": "send", "text": "é" * 501}, "text_too_long"),
        ]
        for frame, code in cases:
            reply = await dave.request(frame)
            assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
        assert (await anon.say("hi"))["code"] == "auth_required"
        assert (await anon.request({"type": "auth", "token": "ot1.x.y"}))["code"] == "auth_failed"
        assert not anon.closed and not dave.closed
        assert (await dave.say("still works"))["type"] == "ack"
        await bystander.wait_for(lambda c: [m["text"] for m in c.messages()] == ["still works"])

        # beyond the server's WebSocket size limit the one connection is closed, no one else
        await dave.ws.send("y" * 200_000)
        await dave.wait_for(lambda c: c.closed)
        assert dave.close_code == 1009
        async with client(a.ws(channel), "erin") as erin:
            assert (await erin.say("after the big one"))["type"] == "ack"
        await bystander.wait_for(lambda c: len(c.messages()) == 2)
        assert not anon.closed


async def test_restarted_server_clients_reconnect_and_history_fills_the_gap(
    servers: tuple[ChatServer, ChatServer], channel: str
) -> None:
    a, b = servers
    async with httpx.AsyncClient() as http, client(a.ws(channel), "frank") as frank:
        response = await http.post(
            f"{a.http}/api/moderation/{channel}/ban", json={"user": "grace"}, headers=ADMIN
        )
        assert response.status_code == 200
        async with client(b.ws(channel)) as viewer:
            await frank.say("before")
            await viewer.wait_for(lambda c: len(c.messages()) == 1)
            last_ts = viewer.messages()[-1]["ts"]
            seen = [m["id"] for m in viewer.messages()]
            b.kill()
            await viewer.wait_for(lambda c: c.closed)
        gap = []
        for i in range(3):
            await asyncio.sleep(1.0)  # within the rate limit
            gap.append((await frank.say(f"during {i}"))["id"])
        await asyncio.to_thread(b.start)
        async with client(b.ws(channel), "grace") as back:
            history = (await http.get(f"{b.http}/api/chat/{channel}?since={last_ts}")).json()
            for message in history["messages"]:
                if message["id"] not in seen:
                    seen.append(message["id"])
            await asyncio.sleep(1.0)
            after = (await frank.say("after"))["id"]
            await back.wait_for(lambda c: len(c.messages()) == 1)
            seen.extend(m["id"] for m in back.messages() if m["id"] not in seen)
            assert seen[1:] == [*gap, after]
            assert (await back.say("let me in"))["code"] == "banned"  # survived the restart


async def test_history_is_bounded_and_pages(
    servers: tuple[ChatServer, ChatServer], channel: str
) -> None:
    a, b = servers
    async with httpx.AsyncClient() as http:
        for query in ("limit=0", "limit=1001", "limit=x", "since=10&until=5"):
            response = await http.get(f"{a.http}/api/chat/{channel}?{query}")
            assert response.status_code == 400, query
            assert response.json()["error"] == "bad_request"
        texts = []
        async with client(a.ws(channel), "heidi") as heidi, client(a.ws(channel), "ivan") as ivan:
            for i in range(3):
                for sender, name in ((heidi, "heidi"), (ivan, "ivan")):
                    texts.append(f"{name} {i}")
                    assert (await sender.say(texts[-1]))["type"] == "ack"
        newest = (await http.get(f"{b.http}/api/chat/{channel}?limit=2")).json()
        assert [m["text"] for m in newest["messages"]] == texts[-2:]
        assert newest["more"] is True
        since = newest["messages"][0]["ts"] - 60_000
        page = (await http.get(f"{b.http}/api/chat/{channel}?since={since}&limit=4")).json()
        assert [m["text"] for m in page["messages"]] == texts[:4]
        assert page["more"] is True and page["next_since"] == page["messages"][-1]["ts"]
        until = page["messages"][1]["ts"]
        bounded = await http.get(f"{b.http}/api/chat/{channel}?since={since}&until={until}")
        assert [m["text"] for m in bounded.json()["messages"]] == texts[:2]


async def test_user_token_endpoint_needs_the_admin_token(
    servers: tuple[ChatServer, ChatServer], channel: str
) -> None:
    a, _b = servers
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{a.http}/api/users/token", json={"user": "judy"})
        assert refused.status_code == 401
        wrong = await http.post(
            f"{a.http}/api/users/token",
            json={"user": "judy"},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
        issued = await http.post(f"{a.http}/api/users/token", json={"user": "Judy"}, headers=ADMIN)
        assert issued.status_code == 200
        token = issued.json()["token"]
        assert issued.json()["user"] == "judy"
    async with client(a.ws(channel)) as judy:
        assert (await judy.request({"type": "auth", "token": token}))["user"] == "judy"
