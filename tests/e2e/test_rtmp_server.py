"""Real ffmpeg publishes to RtmpServer; a test PublishHandler collects what comes out.

No Kafka or S3 here: the server stands alone behind its PublishHandler interface.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gateway.rtmp.chunk import Message, MessageType
from gateway.rtmp.handshake import PACKET_SIZE
from gateway.rtmp.server import RtmpServer
from gateway.rtmp.types import Publication
from pipeline.errors import AuthError, ChannelBusy
from pipeline.media import CodecConfig, MediaUnit, Track
from pipeline.timebase import CLOCK_90K
from tests.unit.rtmp.rtmp_client import TestPublisher

pytestmark = pytest.mark.e2e

FFMPEG = shutil.which("ffmpeg")
GOOD_KEY = "goodkey"


@pytest.fixture(autouse=True)
def _services_for_marked_tests() -> Iterator[None]:
    """Overrides the suite's Kafka/S3 check: this module needs neither."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    yield


class Recorder:
    def __init__(self, on_close: Callable[[], None], gate: asyncio.Event | None = None) -> None:
        self.on_close = on_close
        self.configs: list[CodecConfig] = []
        self.units: list[MediaUnit] = []
        self.metadata: list[dict[str, object]] = []
        self.closes: list[str] = []
        self.configured = asyncio.Event()
        self.closed = asyncio.Event()
        self.gate = gate  # when set, on_config waits for it: the publisher stays live

    async def on_config(self, config: CodecConfig) -> None:
        self.configs.append(config)
        self.configured.set()
        if self.gate is not None:
            await self.gate.wait()

    async def on_media(self, unit: MediaUnit) -> None:
        self.units.append(unit)

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        self.metadata.append(metadata)

    async def close(self, reason: str) -> None:
        self.closes.append(reason)
        self.on_close()
        self.closed.set()

    async def wait_closed(self) -> list[str]:
        await asyncio.wait_for(self.closed.wait(), 10)
        return self.closes

    def track(self, track: Track) -> list[MediaUnit]:
        return [u for u in self.units if u.track is track]


class Handler:
    """Accepts GOOD_KEY once at a time: a second publisher of a live key is refused."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.publications: list[Recorder] = []
        self.live: set[str] = set()
        self.published = asyncio.Event()

    async def start_publish(self, app: str, stream_key: str, peer: str) -> Publication:
        if stream_key != GOOD_KEY:
            raise AuthError("Wrong stream key.")
        if stream_key in self.live:
            raise ChannelBusy("This stream is already live.")
        self.live.add(stream_key)
        recorder = Recorder(lambda: self.live.discard(stream_key), self.gate)
        self.publications.append(recorder)
        self.published.set()
        return recorder


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
async def server(handler: Handler) -> AsyncIterator[RtmpServer]:
    async with RtmpServer("127.0.0.1", 0, handler) as server:
        yield server


async def ffmpeg_publish(
    server: RtmpServer, key: str, seconds: float = 5.0, sample_rate: int = 44100
) -> tuple[int, str]:
    assert FFMPEG is not None
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "60",
        "-c:a", "aac", "-t", str(seconds),
        "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/{key}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


async def test_ffmpeg_publish_arrives_whole(server: RtmpServer, handler: Handler) -> None:
    rc, stderr = await ffmpeg_publish(server, GOOD_KEY)
    assert rc == 0, stderr
    (pub,) = handler.publications
    assert await pub.wait_closed() == ["unpublished"]

    (config,) = pub.configs
    assert (config.width, config.height) == (640, 360)
    assert config.fps == pytest.approx(30, abs=0.1)
    assert (config.audio_sample_rate, config.audio_channels) == (44100, 1)
    assert config.aac_config is not None and config.avc_config[0] == 1
    assert pub.metadata and pub.metadata[0]["framerate"] == 30.0

    video, audio = pub.track(Track.VIDEO), pub.track(Track.AUDIO)
    assert len(video) == 150
    keyframe_dts = [u.dts_90k - video[0].dts_90k for u in video if u.keyframe]
    assert keyframe_dts == pytest.approx([0, 2 * CLOCK_90K, 4 * CLOCK_90K], abs=90 * 40)
    assert all(b.dts_90k > a.dts_90k for a, b in itertools.pairwise(video))
    assert all(u.pts_90k >= u.dts_90k for u in video)
    assert len(audio) == pytest.approx(5 * 44100 / 1024, abs=5)
    assert all(b.dts_90k >= a.dts_90k for a, b in itertools.pairwise(audio))


async def test_wrong_key_is_refused(server: RtmpServer, handler: Handler) -> None:
    rc, stderr = await ffmpeg_publish(server, "wrongkey", seconds=1)
    assert rc != 0
    assert "Wrong stream key." in stderr  # ffmpeg prints the server's description
    assert handler.publications == []
    assert server.guard.counts().failures_total == 1


async def first_config(handler: Handler) -> None:
    async with asyncio.timeout(10):
        await handler.published.wait()
        await handler.publications[0].configured.wait()


async def garbage_connections(server: RtmpServer) -> list[bool]:
    """Three broken clients, one per layer: handshake, chunk stream, AMF."""

    async def one(data: bytes) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 5):
            pass  # the server answers the handshake, then closes
        writer.close()
        await writer.wait_closed()
        return True

    client = TestPublisher()
    handshake = b"\x03" + os.urandom(PACKET_SIZE) + os.urandom(PACKET_SIZE)
    bad_command = Message(MessageType.COMMAND_AMF0, 0, 0, b"\x02\xff\xffpublish", 3)
    return list(
        await asyncio.gather(
            one(b"\x06" + os.urandom(5000)),  # RTMPE: refused in the handshake
            one(handshake + b"\x82" + os.urandom(5000)),  # a type-2 header on a new chunk stream
            one(client.handshake() + client.connect() + client.writer.write(bad_command)),
        )
    )


async def test_garbage_connections_do_not_disturb_a_stream() -> None:
    gate = asyncio.Event()
    handler = Handler(gate)  # the good stream pauses in on_config until the garbage is done
    async with RtmpServer("127.0.0.1", 0, handler) as server:
        publish = asyncio.create_task(ffmpeg_publish(server, GOOD_KEY, seconds=3))
        await first_config(handler)
        assert await garbage_connections(server) == [True, True, True]
        gate.set()
        rc, stderr = await publish
        assert rc == 0, stderr
        (pub,) = handler.publications
        assert await pub.wait_closed() == ["unpublished"]
    assert len(pub.track(Track.VIDEO)) == 90
    assert server.counts.protocol_errors_total == 3


async def test_second_publisher_of_a_live_key_is_refused() -> None:
    gate = asyncio.Event()
    handler = Handler(gate)  # the first publisher stays live until the gate opens
    async with RtmpServer("127.0.0.1", 0, handler) as server:
        first = asyncio.create_task(ffmpeg_publish(server, GOOD_KEY, seconds=2))
        await first_config(handler)
        rc, stderr = await ffmpeg_publish(server, GOOD_KEY, seconds=1)
        assert rc != 0
        assert "already live" in stderr
        # the right key on a live channel is refused, but it is no failed attempt at a key
        assert server.guard.counts().failures_total == 0
        gate.set()
        rc, stderr = await first
        assert rc == 0, stderr
        (pub,) = handler.publications
        assert await pub.wait_closed() == ["unpublished"]
    assert len(pub.track(Track.VIDEO)) == 60
