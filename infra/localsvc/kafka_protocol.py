"""Just enough of the Kafka protocol to ask a broker who is alive (Metadata v4)."""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaMetadata:
    brokers: tuple[tuple[int, str, int], ...]  # (node id, host, port), unfenced brokers only
    cluster_id: str | None
    controller_id: int


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value


def kafka_metadata(host: str, port: int, timeout_s: float = 2.0) -> KafkaMetadata:
    """Ask a broker for cluster metadata (Metadata v4, no topics) over a raw socket."""
    client_id = b"onair-infra"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != 1:
        raise ConnectionError("Metadata answer has the wrong correlation id")
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        broker_host = reader.string() or ""
        broker_port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, broker_host, broker_port))
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return KafkaMetadata(tuple(sorted(brokers)), cluster_id, controller_id)


def kafka_answers(host: str, port: int, brokers: int = 1) -> bool:
    try:
        return len(kafka_metadata(host, port).brokers) >= brokers
    except (OSError, struct.error, UnicodeDecodeError):
        return False
