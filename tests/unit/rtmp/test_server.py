"""RtmpServer over real sockets, driven by the scripted TestPublisher (ffmpeg runs in e2e)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from gateway.rtmp import amf0
from gateway.rtmp.guard import AuthGuard
from gateway.rtmp.server import RtmpServer
from gateway.rtmp.types import Publication
from pipeline.errors import AuthError
from pipeline.media import CodecConfig, MediaUnit
from tests.unit.rtmp.rtmp_client import TestPublisher
from tests.unit.rtmp.samples import aac_frame_tag, aac_header_tag, avc_frame_tag, avc_header_tag

GOOD_KEY = "sk_live_0123456789abcdef"


class Recorder:
    def __init__(self) -> None:
        self.configs: list[CodecConfig] = []
        self.units: list[MediaUnit] = []
        self.metadata: list[dict[str, object]] = []
        self.closes: list[str] = []
        self.closed = asyncio.Event()

    async def on_config(self, config: CodecConfig) -> None:
        self.configs.append(config)

    async def on_media(self, unit: MediaUnit) -> None:
        self.units.append(unit)

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        self.metadata.append(metadata)

    async def close(self, reason: str) -> None:
        self.closes.append(reason)
        self.closed.set()


class Handler:
    def __init__(self, crash: bool = False) -> None:
        self.calls = 0
        self.crash = crash
        self.publications: list[Recorder] = []

    async def start_publish(self, app: str, stream_key: str, peer: str) -> Publication:
        self.calls += 1
        assert (app, peer) == ("live", "127.0.0.1")
        if self.crash:
            raise RuntimeError("database is down")
        if stream_key != GOOD_KEY:
            raise AuthError("Wrong stream key.")
        recorder = Recorder()
        self.publications.append(recorder)
        return recorder


@pytest.fixture
async def handler() -> Handler:
    return Handler()


@pytest.fixture
async def server(handler: Handler) -> AsyncIterator[RtmpServer]:
    async with RtmpServer(
        "127.0.0.1", 0, handler, handshake_timeout_s=2, idle_timeout_s=2
    ) as server:
        yield server


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.rtmp = TestPublisher()
        self._skipped_handshake = False

    @classmethod
    async def open(cls, server: RtmpServer) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def status(self) -> dict[str, amf0.AmfValue] | None:
        """Read answers until an onStatus (returned) or the end of the connection (None)."""
        if not self._skipped_handshake:
            await self.reader.readexactly(1 + 2 * 1536)
            self._skipped_handshake = True
        while data := await asyncio.wait_for(self.reader.read(65536), 5):
            for values in self.rtmp.read_commands(data):
                if values[0] in ("onStatus", "_error") and isinstance(values[3], dict):
                    return values[3]
        return None

    async def publish(self, key: str = GOOD_KEY) -> dict[str, amf0.AmfValue] | None:
        await self.send(self.rtmp.preamble(key))
        return await self.status()

    async def eof(self) -> bool:
        """True once the server has closed the connection (which we then close too)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), 5):
                pass
        except ConnectionError:
            pass
        await self.close()
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def gop(client: TestPublisher) -> bytes:
    return (
        client.video(0, avc_header_tag())
        + client.audio(0, aac_header_tag())
        + client.video(0, avc_frame_tag(True))
        + client.audio(20, aac_frame_tag())
        + client.video(40, avc_frame_tag(False))
    )


async def test_publish_delivers_media_and_closes_once(server: RtmpServer, handler: Handler) -> None:
    client = await Client.open(server)
    status = await client.publish()
    assert status is not None and status["code"] == "NetStream.Publish.Start"
    await client.send(client.rtmp.metadata({"framerate": 25.0}) + gop(client.rtmp))
    await client.send(client.rtmp.unpublish(GOOD_KEY))
    (pub,) = handler.publications
    await asyncio.wait_for(pub.closed.wait(), 5)
    await client.close()
    await asyncio.sleep(0.05)
    assert pub.closes == ["unpublished"]
    assert pub.metadata == [{"framerate": 25.0}]
    assert [c.fps for c in pub.configs] == [25.0]
    assert [u.track.value for u in pub.units] == ["video", "audio", "video"]
    assert server.counts.publishes_total == 1


async def test_disconnect_ends_the_publication_with_held_units(
    server: RtmpServer, handler: Handler
) -> None:
    client = await Client.open(server)
    await client.publish()
    await client.send(gop(client.rtmp))  # no metadata: units wait for the fps estimate
    await client.close()
    (pub,) = handler.publications
    await asyncio.wait_for(pub.closed.wait(), 5)
    assert pub.closes == ["disconnected"]
    assert len(pub.configs) == 1 and len(pub.units) == 3


async def test_wrong_key_is_refused_and_counted(server: RtmpServer, handler: Handler) -> None:
    client = await Client.open(server)
    status = await client.publish("not-the-key")
    assert status == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "Wrong stream key.",
    }
    assert await client.eof()
    assert handler.publications == []
    assert server.guard.counts().failures_total == 1
    assert server.counts.publishes_refused_total == 1


async def test_blocked_address_is_refused_before_auth(handler: Handler) -> None:
    guard = AuthGuard(max_failures=3)
    async with RtmpServer("127.0.0.1", 0, handler, guard) as server:
        for _ in range(3):
            client = await Client.open(server)
            await client.publish("guess")
            await client.close()
        assert handler.calls == 3
        client = await Client.open(server)
        status = await client.publish(GOOD_KEY)
        assert status is not None and status["level"] == "error"
        assert "Too many failed attempts" in str(status["description"])
        assert handler.calls == 3  # never asked
        assert guard.counts().refused_blocked_total == 1
        assert await client.eof()


async def test_protocol_error_closes_only_that_session(
    server: RtmpServer, handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good, bad = await Client.open(server), await Client.open(server)
    await good.publish()
    await bad.publish()
    await bad.send(b"\x80" + bytes(20))  # a type-2 header on an unknown chunk stream
    assert await bad.eof()
    bad_pub = handler.publications[1]
    await asyncio.wait_for(bad_pub.closed.wait(), 5)
    assert bad_pub.closes[0].startswith("protocol error: ")
    await good.send(gop(good.rtmp) + good.rtmp.unpublish(GOOD_KEY))
    good_pub = handler.publications[0]
    await asyncio.wait_for(good_pub.closed.wait(), 5)
    assert good_pub.closes == ["unpublished"] and len(good_pub.units) == 3
    await good.close()
    errors = [r for r in caplog.records if "ChunkError" in r.getMessage()]
    assert len(errors) == 1 and "127.0.0.1" in errors[0].getMessage()
    assert server.counts.protocol_errors_total == 1


async def test_garbage_before_the_handshake(server: RtmpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await reader.read() == b""
    writer.close()
    assert server.counts.protocol_errors_total == 1


async def test_stream_key_is_never_logged(
    server: RtmpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (GOOD_KEY, GOOD_KEY + "-wrong"):
        client = await Client.open(server)
        await client.publish(key)
        await client.send(client.rtmp.video(0, b"\x22\x00"))  # unsupported codec: protocol error
        await client.eof()
    await asyncio.sleep(0.05)
    assert caplog.records
    assert "sk_live" not in caplog.text


async def test_handshake_timeout(handler: Handler) -> None:
    async with RtmpServer("127.0.0.1", 0, handler, handshake_timeout_s=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x03" + bytes(100))  # then nothing
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert server.counts.timeouts_total == 1


async def test_idle_timeout_while_publishing(handler: Handler) -> None:
    async with RtmpServer("127.0.0.1", 0, handler, idle_timeout_s=0.2) as server:
        client = await Client.open(server)
        await client.publish()
        (pub,) = handler.publications
        await asyncio.wait_for(pub.closed.wait(), 2)
        assert pub.closes == ["timeout"]
        assert await client.eof()


async def test_handler_crash_closes_that_connection_only() -> None:
    crashing = Handler(crash=True)
    async with RtmpServer("127.0.0.1", 0, crashing) as server:
        client = await Client.open(server)
        await client.send(client.rtmp.preamble(GOOD_KEY))
        assert await client.eof()
        crashing.crash = False
        client = await Client.open(server)
        status = await client.publish()
        assert status is not None and status["code"] == "NetStream.Publish.Start"
        await client.close()


async def test_stop_ends_running_publications(handler: Handler) -> None:
    server = RtmpServer("127.0.0.1", 0, handler)
    await server.start()
    client = await Client.open(server)
    await client.publish()
    await server.stop()
    (pub,) = handler.publications
    assert pub.closes == ["server stopping"]
    assert await client.eof()
    assert server.counts.connections_open == 0


async def test_connection_limit(handler: Handler) -> None:
    async with RtmpServer("127.0.0.1", 0, handler, max_connections=1) as server:
        first = await Client.open(server)
        await first.publish()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert server.counts.connections_rejected_total == 1
        await first.close()
