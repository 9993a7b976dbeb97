"""Hostile bytes into every parser: only onair's ProtocolError subclasses may come out.

No IndexError, struct.error, RecursionError or MemoryError, and what a parser holds stays
within its bounds whatever it is fed.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.rtmp import amf0
from gateway.rtmp.amf0 import EcmaArray
from gateway.rtmp.chunk import ChunkReader, ChunkWriter, Message
from gateway.rtmp.flv import (
    parse_audio_specific_config,
    parse_audio_tag,
    parse_sps,
    parse_video_tag,
)
from gateway.rtmp.handshake import ServerHandshake
from gateway.rtmp.session import PublishRequested, RtmpSession
from gateway.rtmp.to_media import FlvToMedia
from pipeline.errors import AmfError, ChunkError, FlvError, HandshakeError, ProtocolError
from pipeline.media import CodecConfig
from tests.unit.rtmp.conftest import Capture
from tests.unit.rtmp.rtmp_client import TestPublisher
from tests.unit.rtmp.samples import (
    ASC_48K_MONO,
    AVCC_640X360,
    aac_frame_tag,
    aac_header_tag,
    avc_frame_tag,
    avc_header_tag,
)

FUZZ = settings(max_examples=100, deadline=None)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8)
cuts = st.lists(st.integers(0, 1 << 20), max_size=12)


@FUZZ
@given(st.binary(max_size=4000), cuts)
def test_handshake(data: bytes, cut: list[int]) -> None:
    hs = ServerHandshake()
    try:
        for piece in pieces(data, cut):
            hs.feed(piece)
    except HandshakeError:
        pass


@FUZZ
@given(st.binary(max_size=3000), cuts, st.sampled_from([1, 7, 128, 4096]))
def test_chunk_reader(data: bytes, cut: list[int], chunk_size: int) -> None:
    reader = ChunkReader(max_message_size=2048, max_pending_bytes=4096, max_chunk_streams=8)
    reader.chunk_size = chunk_size
    try:
        for piece in pieces(data, cut):
            reader.feed(piece)
            assert reader.buffered_bytes <= 4096 + 18  # pending messages + one partial header
    except ChunkError:
        pass


messages = st.lists(
    st.builds(
        Message,
        type_id=st.sampled_from([8, 9, 18, 20, 22]),
        stream_id=st.sampled_from([0, 1, 2**32 - 1]),
        timestamp=st.one_of(st.integers(0, 100_000), st.integers(0, 2**32 - 1)),
        payload=st.binary(max_size=600),
        csid=st.sampled_from([3, 4, 63, 64, 319, 320, 65599]),
    ),
    max_size=12,
)


@FUZZ
@given(messages, st.sampled_from([1, 2, 100, 128, 4096]), cuts)
def test_chunk_round_trip(sent: list[Message], chunk_size: int, cut: list[int]) -> None:
    writer = ChunkWriter(chunk_size)
    wire = b"".join(writer.write(m) for m in sent)
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    received = [m for piece in pieces(wire, cut) for m in reader.feed(piece)]
    assert received == sent


@FUZZ
@given(st.binary(max_size=2000))
def test_amf0_decode(data: bytes) -> None:
    with contextlib.suppress(AmfError):
        amf0.decode(data)


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 40))
def test_amf0_nesting(tail: bytes, depth: int) -> None:
    prefixes = [b"\x03\x00\x01k", b"\x0a\x00\x00\x00\x01", b"\x08\x00\x00\x00\x01\x00\x01k"]
    data = b"".join(prefixes[i % 3] for i in range(depth)) + tail
    with contextlib.suppress(AmfError):
        amf0.decode(data)


keys = st.text(max_size=20)
amf_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=50),
        st.just(amf0.UNDEFINED),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5).map(EcmaArray),
    ),
    max_leaves=30,
)


@FUZZ
@given(st.lists(amf_values, max_size=4))
def test_amf0_round_trip(values: list[Any]) -> None:
    assert amf0.decode(amf0.encode(*values)) == values


video_bodies = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        st.sampled_from([b"\x17\x00\x00\x00\x00", b"\x17\x01", b"\x27\x01\x00\x00\x00"]),
        st.binary(max_size=200),
    ).map(lambda t: t[0] + t[1]),
    st.tuples(st.just(avc_header_tag()), edits).map(lambda t: mutate(*t)),
)
audio_bodies = st.one_of(
    st.binary(max_size=50),
    st.tuples(st.sampled_from([b"\xaf\x00", b"\xaf\x01"]), st.binary(max_size=50)).map(
        lambda t: t[0] + t[1]
    ),
    st.tuples(st.just(aac_header_tag()), edits).map(lambda t: mutate(*t)),
)


@FUZZ
@given(video_bodies, audio_bodies)
def test_flv_tags(video: bytes, audio: bytes) -> None:
    with contextlib.suppress(FlvError):
        parse_video_tag(video)
    with contextlib.suppress(FlvError):
        parse_audio_tag(audio)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300).map(lambda b: b"\x67" + b),
        st.tuples(st.just(AVCC_640X360[8:33]), edits).map(lambda t: mutate(*t)),
    ),
    st.one_of(
        st.binary(max_size=8), st.tuples(st.just(ASC_48K_MONO), edits).map(lambda t: mutate(*t))
    ),
)
def test_sps_and_audio_config(sps: bytes, asc: bytes) -> None:
    with contextlib.suppress(FlvError):
        info = parse_sps(sps)
        assert 0 < info.width <= 16384 and 0 < info.height <= 16384
    with contextlib.suppress(FlvError):
        assert parse_audio_specific_config(asc).sample_rate > 0


tags = st.lists(
    st.tuples(
        st.sampled_from(["v", "a"]),
        st.integers(0, 2**32 - 1),
        st.one_of(
            st.sampled_from(
                [
                    avc_header_tag(),
                    avc_frame_tag(True),
                    avc_frame_tag(False, -5),
                    aac_header_tag(),
                    aac_frame_tag(),
                    b"\x17\x02\x00\x00\x00",
                ]
            ),
            video_bodies,
            audio_bodies,
        ),
    ),
    max_size=30,
)


@FUZZ
@given(tags, st.booleans())
def test_flv_to_media(sequence: list[tuple[str, int, bytes]], flush: bool) -> None:
    media = FlvToMedia(fps_probe_frames=3)
    out = []
    for kind, ts, body in sequence:
        with contextlib.suppress(FlvError):
            out += media.video(ts, body) if kind == "v" else media.audio(ts, body)
    if flush:
        out += media.flush()
    if out:
        assert isinstance(out[0], CodecConfig)  # never a unit before its config


def publishing_session() -> tuple[RtmpSession, TestPublisher]:
    session, client = RtmpSession(), TestPublisher()
    session.feed(client.preamble("key"))
    session.accept_publish()
    return session, client


def drive(session: RtmpSession, chunks: list[bytes], bound: int) -> None:
    try:
        for piece in chunks:
            _, events = session.feed(piece)
            if any(isinstance(e, PublishRequested) for e in events):
                session.accept_publish()
            assert session.buffered_bytes <= bound
        session.connection_lost()
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=3000), cuts)
def test_session_garbage_after_publish(data: bytes, cut: list[int]) -> None:
    session, _ = publishing_session()
    drive(session, pieces(data, cut), 64 * 1024 * 1024)


@FUZZ
@given(st.binary(max_size=2000), cuts)
def test_session_garbage_from_the_start(data: bytes, cut: list[int]) -> None:
    drive(RtmpSession(), pieces(b"\x03" + data, cut), 64 * 1024 * 1024)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits, cuts, st.integers(3200, 60_000))
def test_session_mutated_ffmpeg_stream(
    ffmpeg_capture: Capture, changes: list[tuple[int, int]], cut: list[int], length: int
) -> None:
    prefix = ffmpeg_capture.client_bytes[:length]
    # keep the handshake intact so the mutations reach the chunk, AMF and FLV layers
    data = prefix[:3073] + mutate(prefix[3073:], changes)
    drive(RtmpSession(), pieces(data, cut), 64 * 1024 * 1024)


@pytest.mark.parametrize("size", [1 << 20, 8 << 20], ids=["1MiB", "8MiB"])
def test_session_memory_stays_bounded_on_a_huge_message(size: int) -> None:
    session, client = publishing_session()
    session.feed(client.set_chunk_size(1 << 24))
    # announce a 16 MiB message and never finish it: memory is what was sent, not announced
    header = client.writer.write(Message(9, 1, 0, bytes(1), 6))[:12]
    header = header[:4] + (0xFFFFFF).to_bytes(3, "big") + header[7:]
    session.feed(header)
    for _ in range(size // 65536):
        session.feed(bytes(65536))
    assert session.buffered_bytes <= size + 4096
