from __future__ import annotations

import itertools

import pytest

from gateway.rtmp.chunk import (
    ChunkConnection,
    ChunkReader,
    ChunkWriter,
    Message,
    MessageType,
    UserControlEvent,
    user_control_message,
    window_ack_size_message,
)
from pipeline.errors import BudgetExceeded, ChunkError
from tests.unit.rtmp.conftest import Capture

VIDEO = MessageType.VIDEO
AUDIO = MessageType.AUDIO


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([(fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def t0(csid: int, ts: int, length: int, type_id: int, sid: int = 1) -> bytes:
    ext = ts >= 0xFFFFFF
    out = basic(0, csid) + (0xFFFFFF if ext else ts).to_bytes(3, "big")
    out += length.to_bytes(3, "big") + bytes([type_id]) + sid.to_bytes(4, "little")
    return out + (ts.to_bytes(4, "big") if ext else b"")


def t1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    return basic(1, csid) + delta.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])


def t2(csid: int, delta: int) -> bytes:
    return basic(2, csid) + delta.to_bytes(3, "big")


def t3(csid: int, ext: int | None = None) -> bytes:
    return basic(3, csid) + (ext.to_bytes(4, "big") if ext is not None else b"")


A = bytes(range(100, 200))  # 100 bytes
B = bytes(range(200))  # 200 bytes: two chunks at the default size of 128
BIG_TS = 0x01000000 + 5


def scs(size: int) -> bytes:
    return t0(2, 0, 4, MessageType.SET_CHUNK_SIZE, 0) + size.to_bytes(4, "big")


# (wire bytes, expected messages as (csid, type, stream id, timestamp, payload))
PARSE_CASES = [
    ("type-0", t0(3, 1000, 100, VIDEO) + A, [(3, VIDEO, 1, 1000, A)]),
    (
        "type-3-continuation",
        t0(6, 40, 200, VIDEO) + B[:128] + t3(6) + B[128:],
        [(6, VIDEO, 1, 40, B)],
    ),
    (
        "type-1-new-message-with-delta",
        t0(4, 100, 100, AUDIO) + A + t1(4, 23, 2, AUDIO) + b"xy",
        [(4, AUDIO, 1, 100, A), (4, AUDIO, 1, 123, b"xy")],
    ),
    (
        "type-2-same-length-and-type",
        t0(4, 100, 2, AUDIO) + b"ab" + t2(4, 21) + b"cd",
        [(4, AUDIO, 1, 100, b"ab"), (4, AUDIO, 1, 121, b"cd")],
    ),
    (
        "type-3-new-message-repeats-delta",
        t0(4, 0, 2, AUDIO) + b"ab" + t2(4, 21) + b"cd" + t3(4) + b"ef",
        [(4, AUDIO, 1, 0, b"ab"), (4, AUDIO, 1, 21, b"cd"), (4, AUDIO, 1, 42, b"ef")],
    ),
    (
        "type-3-after-type-0-adds-its-timestamp",  # spec 5.3.1.2.4
        t0(4, 30, 2, AUDIO) + b"ab" + t3(4) + b"cd",
        [(4, AUDIO, 1, 30, b"ab"), (4, AUDIO, 1, 60, b"cd")],
    ),
    ("two-byte-basic-header", t0(100, 5, 2, VIDEO) + b"hi", [(100, VIDEO, 1, 5, b"hi")]),
    ("three-byte-basic-header", t0(40000, 5, 2, VIDEO) + b"hi", [(40000, VIDEO, 1, 5, b"hi")]),
    (
        "extended-timestamp-repeated-on-continuation",  # ffmpeg, librtmp
        t0(6, BIG_TS, 200, VIDEO) + B[:128] + t3(6, BIG_TS) + B[128:],
        [(6, VIDEO, 1, BIG_TS, B)],
    ),
    (
        "extended-timestamp-not-repeated-on-continuation",  # some older servers
        t0(6, BIG_TS, 200, VIDEO) + B[:128] + t3(6) + B[128:],
        [(6, VIDEO, 1, BIG_TS, B)],
    ),
    (
        "extended-delta-on-type-1",
        t0(4, 10, 2, AUDIO)
        + b"ab"
        + basic(1, 4)
        + b"\xff\xff\xff"
        + (2).to_bytes(3, "big")
        + bytes([AUDIO])
        + (0x01000000).to_bytes(4, "big")
        + b"cd",
        [(4, AUDIO, 1, 10, b"ab"), (4, AUDIO, 1, 10 + 0x01000000, b"cd")],
    ),
    (
        "interleaved-chunk-streams",
        t0(6, 0, 200, VIDEO) + B[:128] + t0(4, 0, 2, AUDIO) + b"au" + t3(6) + B[128:],
        [(4, AUDIO, 1, 0, b"au"), (6, VIDEO, 1, 0, B)],
    ),
    (
        "set-chunk-size-applies-to-following-chunks",
        scs(200) + t0(6, 0, 200, VIDEO) + B,
        [(6, VIDEO, 1, 0, B)],
    ),
    (
        "abort-drops-the-partial-message",
        t0(6, 0, 200, VIDEO)
        + B[:128]
        + t0(2, 0, 4, MessageType.ABORT, 0)
        + (6).to_bytes(4, "big")
        + t0(6, 50, 100, VIDEO)
        + A,
        [(6, VIDEO, 1, 50, A)],
    ),
    ("zero-length-message", t0(3, 7, 0, VIDEO), [(3, VIDEO, 1, 7, b"")]),
    (
        "timestamp-wraps-at-32-bits",
        t0(4, 0xFFFFFFF0, 2, AUDIO) + b"ab" + t2(4, 0x20) + b"cd",
        [(4, AUDIO, 1, 0xFFFFFFF0, b"ab"), (4, AUDIO, 1, 0x10, b"cd")],
    ),
]


def _tuples(messages: list[Message]) -> list[tuple[int, int, int, int, bytes]]:
    return [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages]


@pytest.mark.parametrize(
    ("wire", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_parses(wire: bytes, expected: list[tuple[int, int, int, int, bytes]]) -> None:
    assert _tuples(ChunkReader().feed(wire)) == expected
    reader = ChunkReader()
    one_by_one = [m for i in range(len(wire)) for m in reader.feed(wire[i : i + 1])]
    assert _tuples(one_by_one) == expected
    assert reader.buffered_bytes == 0


ERROR_CASES = [
    ("chunk-size-zero", scs(0), "chunk size 0"),
    ("chunk-size-above-2^24", scs((1 << 24) + 1), "out of range"),
    (
        "set-chunk-size-too-short",
        t0(2, 0, 2, MessageType.SET_CHUNK_SIZE, 0) + b"\x00\x01",
        "want 4",
    ),
    ("message-too-large", t0(3, 0, 5000, VIDEO), "exceeds 4096"),
    ("type-2-starts-a-chunk-stream", t2(9, 0), "starts with a type-2"),
    ("type-3-starts-a-chunk-stream", t3(9), "starts with a type-3"),
    ("type-0-inside-a-message", t0(6, 0, 200, VIDEO) + B[:128] + t0(6, 0, 2, VIDEO), "inside"),
    (
        "too-many-chunk-streams",
        b"".join(t0(c, 0, 1, VIDEO) + b"x" for c in range(3, 13)),
        "more than 8",
    ),
    (
        "too-many-pending-bytes",
        b"".join(t0(c, 0, 4000, VIDEO) + bytes(128) for c in range(3, 7)),
        "unfinished messages",
    ),
]


@pytest.mark.parametrize(
    ("wire", "match"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_refuses(wire: bytes, match: str) -> None:
    reader = ChunkReader(max_message_size=4096, max_pending_bytes=400, max_chunk_streams=8)
    with pytest.raises(ChunkError, match=match):
        reader.feed(wire)


@pytest.mark.parametrize("chunk_size", [1, 128, 4096, 1 << 24], ids=lambda n: f"chunk-{n}")
@pytest.mark.parametrize("repeat_ext", [True, False], ids=["ext-repeated", "ext-once"])
def test_writer_output_parses_back(chunk_size: int, repeat_ext: bool) -> None:
    messages = [
        Message(VIDEO, 1, 0, bytes(300), 6),
        Message(AUDIO, 1, 10, b"a" * 7, 4),
        Message(AUDIO, 1, 20, b"b" * 7, 4),  # type 2
        Message(AUDIO, 1, 30, b"c" * 7, 4),  # type 3
        Message(AUDIO, 1, 31, b"d" * 9, 4),  # type 1
        Message(VIDEO, 1, BIG_TS, bytes(range(256)) * 3, 6),  # extended
        Message(VIDEO, 1, BIG_TS + 33, bytes(500), 6),
        Message(VIDEO, 1, 5, bytes(10), 6),  # backwards: type 0 again
        Message(MessageType.COMMAND_AMF0, 0, 0, b"cmd", 65599),
    ]
    writer = ChunkWriter(chunk_size, repeat_extended_timestamp=repeat_ext)
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    wire = b"".join(writer.write(m) for m in messages)
    assert reader.feed(wire) == messages


def test_connection_acknowledges_each_window() -> None:
    conn = ChunkConnection()
    writer = ChunkWriter()
    client = ChunkReader()
    assert conn.receive(writer.write(window_ack_size_message(1000))) == []
    assert conn.peer_window_ack_size == 1000
    acks: list[int] = []
    for ts in range(10):
        conn.receive(writer.write(Message(VIDEO, 1, ts, bytes(300), 6)))
        for m in client.feed(conn.data_to_send()):
            assert m.type_id == MessageType.ACKNOWLEDGEMENT
            acks.append(int.from_bytes(m.payload, "big"))
    assert len(acks) == conn.bytes_received // 1000 or len(acks) == conn.bytes_received // 1000 - 1
    assert acks == sorted(acks)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(acks))


def test_connection_answers_ping_and_swallows_control() -> None:
    conn = ChunkConnection()
    writer = ChunkWriter()
    wire = (
        writer.write(user_control_message(UserControlEvent.PING_REQUEST, 4242))
        + writer.write(user_control_message(UserControlEvent.SET_BUFFER_LENGTH, 1))
        + writer.write(Message(MessageType.ACKNOWLEDGEMENT, 0, 0, (77).to_bytes(4, "big"), 2))
        + writer.write(Message(MessageType.SET_PEER_BANDWIDTH, 0, 0, bytes(5), 2))
        + writer.write(Message(VIDEO, 1, 0, b"v", 6))
    )
    assert [m.type_id for m in conn.receive(wire)] == [VIDEO]
    assert conn.peer_acknowledged == 77
    (pong,) = ChunkReader().feed(conn.data_to_send())
    assert pong.type_id == MessageType.USER_CONTROL
    assert pong.payload == UserControlEvent.PING_RESPONSE.to_bytes(2, "big") + (4242).to_bytes(
        4, "big"
    )


@pytest.mark.parametrize(
    ("type_id", "payload"),
    [
        (MessageType.USER_CONTROL, b"\x00"),
        (MessageType.USER_CONTROL, b"\x00\x06\x00"),
        (MessageType.WINDOW_ACK_SIZE, b"\x00\x00"),
        (MessageType.ACKNOWLEDGEMENT, b""),
        (MessageType.SET_PEER_BANDWIDTH, b"\x00\x00\x00\x01"),
        (MessageType.ABORT, b"\x00"),
    ],
    ids=["user-control", "ping", "window-ack-size", "ack", "peer-bandwidth", "abort"],
)
def test_connection_refuses_short_control_messages(type_id: int, payload: bytes) -> None:
    with pytest.raises(ChunkError, match=r"too short|want 4"):
        ChunkConnection().receive(ChunkWriter().write(Message(type_id, 0, 0, payload, 2)))


@pytest.mark.parametrize("piece", [1, 1000, 65536], ids=lambda n: f"pieces-of-{n}")
def test_parses_real_ffmpeg_stream_in_any_split(ffmpeg_capture: Capture, piece: int) -> None:
    wire = ffmpeg_capture.client_bytes[1 + 2 * 1536 :]
    if piece == 1:
        wire = wire[:20_000]  # byte by byte is slow; the first 20 kB hold every kind of header
    whole = ChunkReader().feed(wire)
    reader = ChunkReader()
    pieces = [m for i in range(0, len(wire), piece) for m in reader.feed(wire[i : i + piece])]
    assert pieces == whole
    kinds = {m.type_id for m in whole}
    assert {MessageType.COMMAND_AMF0, MessageType.DATA_AMF0, VIDEO} <= kinds
    assert reader.chunk_size == 4096  # ffmpeg raises it right after the handshake


@pytest.mark.parametrize(
    ("size", "ok"),
    [(1, False), (127, False), (128, True), (4096, True)],
    ids=["one", "below-default", "default", "obs-ffmpeg"],
)
def test_peer_chunk_size_has_a_floor(size: int, ok: bool) -> None:
    """Chunk size 1 made every payload byte cost a chunk header (0.64 MB/s of parsing)."""
    reader = ChunkReader()
    if ok:
        reader.feed(scs(size))
        assert reader.chunk_size == size
    else:
        with pytest.raises(ChunkError, match=f"chunk size {size} out of range 128.."):
            reader.feed(scs(size))


def test_message_budget_stops_a_zero_length_flood_inside_one_feed() -> None:
    """Every 0xC3 after a zero-length fmt-0 header is one more message: only a count stops
    them, in the middle of the bytes of one read."""
    reader = ChunkReader()
    reader.message_budget = 100
    with pytest.raises(BudgetExceeded, match="message budget"):
        reader.feed(t0(3, 0, 0, 99) + b"\xc3" * 65536)
    assert reader.messages_total == 101
    counted = ChunkReader()
    assert len(counted.feed(t0(3, 0, 0, 99) + b"\xc3" * 10)) == 11  # no budget: no limit
    assert counted.messages_total == 11
