"""Hostile RTMP clients against a real RtmpServer: one must never hurt anybody else.

The loop's responsiveness is measured with a 5 ms timer task on the server's loop while an
honest publisher streams and an attacker floods. Before budgets, the zero-length message
flood (issue 12, item 1) held the loop 0.6-3 s per 64 KiB read; with them the attacker is
closed within its first slice and the timer stays within a few ms (bounds below leave room
for a busy shared machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rtmp.chunk import Message, MessageType
from gateway.rtmp.limits import RtmpLimits
from gateway.rtmp.server import RtmpServer
from gateway.rtmp.session import RtmpSession
from pipeline.errors import ProtocolError
from pipeline.metrics import Registry
from tests.unit.rtmp.rtmp_client import TestPublisher
from tests.unit.rtmp.samples import aac_frame_tag, aac_header_tag, avc_frame_tag, avc_header_tag
from tests.unit.rtmp.test_flv import _worst_sps
from tests.unit.rtmp.test_server import GOOD_KEY, Client, Handler

# fmt-0 header on csid 3: length 0, type 99, stream 0; every 0xC3 after it is one more message
ZERO_LENGTH_HEADER = b"\x03" + bytes(6) + bytes([99]) + bytes(4)
MAX_LAG_S = 0.25  # measured after the fix: 3-30 ms on a loaded 2-core machine; before: 0.6-3 s


class LagMeter:
    """How late a 5 ms timer on this loop wakes up (the loop's responsiveness)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            self.lags.append(loop.time() - start - 0.005)

    def __enter__(self) -> LagMeter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst_s(self) -> float:
        return max(self.lags, default=0.0)


@pytest.fixture
async def handler() -> Handler:
    return Handler()


@pytest.fixture
async def server(handler: Handler) -> AsyncIterator[RtmpServer]:
    async with RtmpServer("127.0.0.1", 0, handler, registry=Registry()) as server:
        yield server


async def stream_for(client: Client, seconds: float) -> int:
    """An honest publisher: header, then a frame + an audio frame every 20 ms."""
    rtmp = client.rtmp
    await client.send(
        rtmp.metadata({"framerate": 50.0})
        + rtmp.video(0, avc_header_tag())
        + rtmp.audio(0, aac_header_tag())
    )
    frames = int(seconds / 0.02)
    for i in range(frames):
        ts = i * 20
        await client.send(rtmp.video(ts, avc_frame_tag(i == 0)) + rtmp.audio(ts, aac_frame_tag()))
        await asyncio.sleep(0.02)
    return frames


async def flood(server: RtmpServer, wire: bytes, *, after: bytes = b"") -> bool:
    """Send `after`, then `wire` at once; True once the server has closed the connection,
    False if it has not within 3 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        if after:
            writer.write(after)
            await asyncio.sleep(0.1)
        writer.write(wire)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            async with asyncio.timeout(3):
                while await reader.read(65536):
                    pass
        except ConnectionError:
            pass
        except TimeoutError:
            return False
        return True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def honest_publish_during(
    server: RtmpServer, handler: Handler, attack: Callable[[], Awaitable[bool]]
) -> None:
    good = await Client.open(server)
    status = await good.publish()
    assert status is not None and status["code"] == "NetStream.Publish.Start"
    with LagMeter() as meter:
        closed, frames = await asyncio.gather(attack(), stream_for(good, 1.0))
    assert meter.worst_s < MAX_LAG_S, f"the loop stalled {meter.worst_s * 1000:.0f} ms"
    assert closed
    await good.send(good.rtmp.unpublish(GOOD_KEY))
    (pub,) = handler.publications
    await asyncio.wait_for(pub.closed.wait(), 5)
    await good.close()
    video = [u for u in pub.units if u.track.value == "video"]
    assert len(video) == frames  # nothing of the honest stream was lost


async def test_zero_length_flood_before_connect_leaves_the_loop_responsive(
    server: RtmpServer, handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    wire = TestPublisher().handshake() + ZERO_LENGTH_HEADER + b"\xc3" * (256 * 1024)
    await honest_publish_during(server, handler, lambda: flood(server, wire))
    assert server.counts.protocol_errors_total == 1
    assert server.counts.budget_exceeded_total == 1
    assert "more than 128 messages before the publish was accepted" in caplog.text


async def test_zero_length_flood_after_publish_is_metered(
    server: RtmpServer, handler: Handler
) -> None:
    """A valid key does not buy the loop: messages a second are metered after the publish."""
    rtmp = TestPublisher()
    after = rtmp.preamble(GOOD_KEY)
    wire = b"\x08" + bytes(6) + bytes([99]) + (1).to_bytes(4, "little") + b"\xc8" * (256 * 1024)

    async def attack() -> bool:
        return await flood(server, wire, after=after)

    good = await Client.open(server)
    assert await good.publish() is not None
    with LagMeter() as meter:
        closed, frames = await asyncio.gather(attack(), stream_for(good, 1.0))
    assert meter.worst_s < MAX_LAG_S, f"the loop stalled {meter.worst_s * 1000:.0f} ms"
    assert closed
    assert server.counts.budget_exceeded_total == 1
    honest = handler.publications[0]
    assert len([u for u in honest.units if u.track.value == "video"]) == frames
    await good.close()


@pytest.mark.parametrize(
    ("wire", "budget"),
    [
        (TestPublisher().handshake() + ZERO_LENGTH_HEADER + b"\xc3" * 200, "messages"),
        (
            TestPublisher().handshake()
            + TestPublisher().writer.write(
                Message(MessageType.DATA_AMF0, 0, 0, b"\x00" + bytes(8) * 10_000, 4)
            ),
            "bytes",
        ),
    ],
    ids=["zero-length-messages", "data-before-connect"],
)
async def test_anonymous_budgets_close_and_count(
    handler: Handler, wire: bytes, budget: str
) -> None:
    registry = Registry()
    async with RtmpServer("127.0.0.1", 0, handler, registry=registry) as server:
        assert await flood(server, wire)
        assert server.counts.protocol_errors_total == 1
        assert server.counts.budget_exceeded_total == 1
    text = registry.render()
    assert f'onair_rtmp_budget_exceeded_total{{budget="{budget}"}} 1' in text
    assert "onair_rtmp_protocol_errors_total 1" in text
    assert "onair_rtmp_connections_total 1" in text


async def test_chunk_size_below_the_minimum_is_refused(server: RtmpServer) -> None:
    client = TestPublisher()
    assert await flood(server, client.handshake() + client.set_chunk_size(1))
    assert server.counts.protocol_errors_total == 1
    assert server.counts.budget_exceeded_total == 0


async def test_parse_cpu_budget_closes_an_expensive_connection(handler: Handler) -> None:
    """Valid but costly input (sequence headers of the slowest SPS there is, ~0.5 ms each)
    from a publisher with a key: past its parse-CPU allowance the connection is closed."""
    sps = _worst_sps()
    record = b"\x01\xf4\x00\x28\xff\xe1" + len(sps).to_bytes(2, "big") + sps
    record += b"\x01\x00\x04\x68\xce\x0f\xc8"
    limits = RtmpLimits(parse_cpu_share=0.001, parse_cpu_burst_s=0.02)
    registry = Registry()
    async with RtmpServer("127.0.0.1", 0, handler, limits=limits, registry=registry) as server:
        client = await Client.open(server)
        status = await client.publish()
        assert status is not None and status["code"] == "NetStream.Publish.Start"
        header = client.rtmp.video(0, avc_header_tag(record))
        with contextlib.suppress(ConnectionError):
            for _ in range(20):
                await client.send(header * 10)
        assert await client.eof()
        assert server.counts.budget_exceeded_total == 1
    assert 'onair_rtmp_budget_exceeded_total{budget="cpu"} 1' in registry.render()


async def test_refusals_are_logged_at_a_limited_rate(
    server: RtmpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    wire = TestPublisher().handshake() + ZERO_LENGTH_HEADER + b"\xc3" * 200
    for _ in range(5):
        assert await flood(server, wire)
    assert server.counts.budget_exceeded_total == 5
    lines = [r for r in caplog.records if "BudgetExceeded" in r.getMessage()]
    assert len(lines) == 1


def test_settings_defaults_are_the_code_defaults() -> None:
    """`onair ingest` builds `RtmpLimits` from Settings: with no environment, the same."""
    from pipeline.settings import Settings

    limits, settings = RtmpLimits(), Settings()
    for name in (
        "min_chunk_size",
        "prepublish_max_bytes",
        "prepublish_max_messages",
        "max_messages_per_s",
        "parse_slice_bytes",
        "parse_cpu_share",
    ):
        assert getattr(settings, f"rtmp_{name}") == getattr(limits, name), name


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=6000), st.lists(st.integers(0, 1 << 16), max_size=8), st.booleans())
def test_anonymous_bytes_never_cost_more_than_the_budget(
    data: bytes, cuts: list[int], zero_length_start: bool
) -> None:
    limits = RtmpLimits(prepublish_max_bytes=8192, prepublish_max_messages=16)
    session = RtmpSession(limits=limits)
    wire = TestPublisher().handshake() + (ZERO_LENGTH_HEADER if zero_length_start else b"") + data
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    reader = session._chunks.reader
    with contextlib.suppress(ProtocolError):
        for a, b in itertools.pairwise(points):
            session.feed(wire[a:b])
            assert session.buffered_bytes <= limits.prepublish_max_bytes
    assert reader.messages_total <= limits.prepublish_max_messages + 1
