"""A minimal RTMP publisher built from our own chunk writer and AMF0 encoder, for tests.

It produces the bytes a client like ffmpeg would send and reads the server's answers, so
session and server tests can script any sequence, including wrong ones.
"""

from __future__ import annotations

import os

from gateway.rtmp import amf0
from gateway.rtmp.chunk import ChunkReader, ChunkWriter, Message, MessageType
from gateway.rtmp.handshake import PACKET_SIZE


class TestPublisher:
    __test__ = False  # not a test class, despite the name

    def __init__(self, chunk_size: int = 128) -> None:
        self.writer = ChunkWriter(chunk_size)
        self.reader = ChunkReader()
        self._next_txn = 1.0

    def handshake(self) -> bytes:
        """C0 + C1 + C2: the server accepts any C2, so a script can send it up front."""
        c1 = bytes(8) + os.urandom(PACKET_SIZE - 8)
        return b"\x03" + c1 + bytes(PACKET_SIZE)

    def set_chunk_size(self, size: int) -> bytes:
        out = self.writer.write(
            Message(MessageType.SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"), 2)
        )
        self.writer.chunk_size = size
        return out

    def command(
        self, name: str, *args: object, stream_id: int = 0, txn: float | None = None
    ) -> bytes:
        if txn is None:
            txn, self._next_txn = self._next_txn, self._next_txn + 1
        payload = amf0.encode(name, txn, *args)
        return self.writer.write(Message(MessageType.COMMAND_AMF0, stream_id, 0, payload, 3))

    def connect(self, app: str = "live") -> bytes:
        return self.command(
            "connect", {"app": app, "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1/{app}"}
        )

    def publish(self, name: str) -> bytes:
        return (
            self.command("releaseStream", None, name)
            + self.command("FCPublish", None, name)
            + self.command("createStream", None)
            + self.command("publish", None, name, "live", stream_id=1, txn=0.0)
        )

    def preamble(self, name: str, app: str = "live") -> bytes:
        return self.handshake() + self.connect(app) + self.publish(name)

    def metadata(self, values: dict[str, object]) -> bytes:
        payload = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(values))  # type: ignore[arg-type]
        return self.writer.write(Message(MessageType.DATA_AMF0, 1, 0, payload, 4))

    def video(self, timestamp_ms: int, body: bytes) -> bytes:
        return self.writer.write(Message(MessageType.VIDEO, 1, timestamp_ms, body, 6))

    def audio(self, timestamp_ms: int, body: bytes) -> bytes:
        return self.writer.write(Message(MessageType.AUDIO, 1, timestamp_ms, body, 4))

    def unpublish(self, name: str) -> bytes:
        return self.command("FCUnpublish", None, name) + self.command("deleteStream", None, 1.0)

    def read_commands(self, data: bytes) -> list[list[amf0.AmfValue]]:
        """Decode the command messages among the server's answers (after S0/S1/S2)."""
        return [
            amf0.decode(m.payload)
            for m in self.reader.feed(data)
            if m.type_id == MessageType.COMMAND_AMF0
        ]
