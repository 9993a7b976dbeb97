from __future__ import annotations

import pytest

from gateway.rtmp.handshake import PACKET_SIZE, HandshakeState, ServerHandshake
from pipeline.errors import HandshakeError
from tests.unit.rtmp.conftest import Capture

SIMPLE_C1 = bytes([0, 0, 1, 0]) + bytes(4) + (bytes(range(256)) * 6)[: PACKET_SIZE - 8]
DIGEST_C1 = bytes([0, 0, 0, 0, 9, 0, 124, 2]) + bytes(PACKET_SIZE - 8)  # ffmpeg's version


def _server() -> ServerHandshake:
    return ServerHandshake(random_bytes=lambda n: b"\xab" * n, uptime_ms=lambda: 1234)


@pytest.mark.parametrize(
    ("c1", "version"),
    [(SIMPLE_C1, (0, 0, 0, 0)), (DIGEST_C1, (9, 0, 124, 2))],
    ids=["simple", "digest-style"],
)
def test_answers_c0_c1_with_s0_s1_s2(c1: bytes, version: tuple[int, ...]) -> None:
    hs = _server()
    out = hs.feed(b"\x03" + c1)
    assert len(out) == 1 + 2 * PACKET_SIZE
    assert out[0] == 3
    s1 = out[1 : 1 + PACKET_SIZE]
    assert s1[:8] == (1234).to_bytes(4, "big") + bytes(4)  # time, zero version: no digest
    assert s1[8:] == b"\xab" * (PACKET_SIZE - 8)
    assert out[1 + PACKET_SIZE :] == c1  # S2 echoes C1
    assert hs.client_version == version
    assert hs.state is HandshakeState.WAIT_C2
    assert hs.feed(s1) == b""
    assert hs.done
    assert hs.leftover == b""


@pytest.mark.parametrize("piece", [1, 7, 1537, 4000], ids=lambda n: f"pieces-of-{n}")
def test_any_split_of_the_input_gives_the_same_answer(piece: int) -> None:
    data = b"\x03" + SIMPLE_C1 + bytes(PACKET_SIZE) + b"chunk stream starts"
    hs = _server()
    out = b""
    for i in range(0, len(data), piece):
        if hs.done:
            break
        out += hs.feed(data[i : i + piece])
    assert out == _server().feed(b"\x03" + SIMPLE_C1)
    assert hs.done
    leftover_start = 1 + 2 * PACKET_SIZE
    consumed = min(len(data), -(-leftover_start // piece) * piece)
    assert hs.leftover + data[consumed:] == b"chunk stream starts"


@pytest.mark.parametrize(
    "first",
    [0, 6, 0x16, ord("G"), 31],
    ids=["version-0", "rtmpe", "tls-client-hello", "http", "reserved"],
)
def test_refuses_other_versions(first: int) -> None:
    with pytest.raises(HandshakeError, match="version"):
        _server().feed(bytes([first]) + SIMPLE_C1)


def test_refuses_bytes_after_completion() -> None:
    hs = _server()
    hs.feed(b"\x03" + SIMPLE_C1 + bytes(PACKET_SIZE))
    with pytest.raises(HandshakeError):
        hs.feed(b"x")


def test_completes_with_real_ffmpeg_bytes(ffmpeg_capture: Capture) -> None:
    hs = ServerHandshake()
    out = hs.feed(ffmpeg_capture.client_bytes[: 1 + PACKET_SIZE])
    assert out[1 + PACKET_SIZE :] == ffmpeg_capture.client_bytes[1 : 1 + PACKET_SIZE]
    hs.feed(ffmpeg_capture.client_bytes[1 + PACKET_SIZE : 1 + 2 * PACKET_SIZE + 10])
    assert hs.done
    assert hs.client_version != (0, 0, 0, 0)  # ffmpeg sends a digest-style C1
    assert len(hs.leftover) == 10
