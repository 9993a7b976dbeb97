"""RTMP handshake, server side, sans-I/O.

    client                         server
    C0 (1 byte: version 3)  ──▶
    C1 (1536 bytes)         ──▶
                            ◀──    S0 (version 3), S1 (1536 bytes), S2 (echo of C1)
    C2 (echo of S1)         ──▶
    ... chunk stream ...

This is the *simple* handshake. Flash-era clients (ffmpeg, librtmp in OBS) send a "digest"
C1 (a client version in bytes 4..8 and an HMAC somewhere inside); they only verify the
server's digest when S1 carries a server version, so answering with a zero version and
echoing C1 satisfies them. C2 is accepted whatever it holds, as the spec's peers do.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from enum import Enum

from pipeline.errors import HandshakeError

logger = logging.getLogger(__name__)

RTMP_VERSION = 3
PACKET_SIZE = 1536


class HandshakeState(Enum):
    WAIT_C0C1 = "wait_c0c1"
    WAIT_C2 = "wait_c2"
    DONE = "done"


class ServerHandshake:
    """Feed client bytes; get the bytes to answer with.

    Once `done`, `leftover` holds whatever the client sent after C2 (the start of its chunk
    stream), which the caller hands to the chunk parser.
    """

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        uptime_ms: Callable[[], int] = lambda: 0,
    ) -> None:
        self._random_bytes = random_bytes
        self._uptime_ms = uptime_ms
        self._buf = bytearray()
        self.state = HandshakeState.WAIT_C0C1
        self.leftover = b""
        self.client_version: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def done(self) -> bool:
        return self.state is HandshakeState.DONE

    def feed(self, data: bytes) -> bytes:
        """Consume client bytes; return bytes to send (possibly empty)."""
        if self.state is HandshakeState.DONE:
            raise HandshakeError("handshake already complete")
        self._buf += data
        out = b""
        if self.state is HandshakeState.WAIT_C0C1:
            if not self._buf:
                return out
            version = self._buf[0]
            if version != RTMP_VERSION:
                # 6 = RTMPE (encrypted), 0x16 = a TLS ClientHello, 'G' = HTTP, ...
                raise HandshakeError(f"unsupported RTMP version {version} (want {RTMP_VERSION})")
            if len(self._buf) < 1 + PACKET_SIZE:
                return out
            c1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
            del self._buf[: 1 + PACKET_SIZE]
            out = self._answer(c1)
            self.state = HandshakeState.WAIT_C2
        if self.state is HandshakeState.WAIT_C2 and len(self._buf) >= PACKET_SIZE:
            self.leftover = bytes(self._buf[PACKET_SIZE:])
            self._buf.clear()
            self.state = HandshakeState.DONE
        return out

    def _answer(self, c1: bytes) -> bytes:
        c1_version = c1[4:8]
        self.client_version = (c1_version[0], c1_version[1], c1_version[2], c1_version[3])
        now = self._uptime_ms() & 0xFFFFFFFF
        random = self._random_bytes(PACKET_SIZE - 8)
        if len(random) != PACKET_SIZE - 8:
            raise HandshakeError("random source returned the wrong length")
        s0 = bytes([RTMP_VERSION])
        s1 = struct.pack(">II", now, 0) + random  # zero version: no digest to verify
        # S2 echoes C1 verbatim (time and version too): librtmp compares the whole packet.
        return s0 + s1 + c1
