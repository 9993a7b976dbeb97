"""RTMP chunk stream: parser, writer and the protocol control messages, sans-I/O.

A message (command, audio, video, ...) travels as one or more chunks; chunks of different
chunk streams (csid) interleave. Each chunk is

    basic header      1-3 bytes   fmt (2 bits) + csid
    message header    11/7/3/0    fmt 0: timestamp, length, type, stream id (little endian)
                                  fmt 1: timestamp delta, length, type
                                  fmt 2: timestamp delta
                                  fmt 3: nothing: all from the previous chunk of this csid
    extended ts       0/4         when the 24-bit field is 0xFFFFFF
    payload           up to the chunk size

ffmpeg and librtmp (OBS) repeat the extended timestamp on fmt-3 continuation chunks; some
servers of old do not. For continuation chunks we look at the next four bytes and skip them
when they repeat the stored value, so both kinds parse.

Hostile input is bounded: a message's length, the bytes held in partly received messages, the
number of chunk streams and the peer's chunk size (at least `min_chunk_size`: chunk size 1
costs a header per byte) have limits, and every violation raises `ChunkError`. The caller may
also give the reader a `message_budget`, the number of messages it may still complete: a
zero-length message is a single byte on the wire, so only a count stops a flood of them in
the middle of one `feed()`; running out raises `BudgetExceeded`.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from enum import IntEnum

from pipeline.errors import BudgetExceeded, ChunkError

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 128
MIN_CHUNK_SIZE = DEFAULT_CHUNK_SIZE  # what a peer may set; below the default helps nobody
MAX_CHUNK_SIZE = 1 << 24
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_PENDING_BYTES = 32 * 1024 * 1024
MAX_CHUNK_STREAMS = 64
EXTENDED_TIMESTAMP = 0xFFFFFF
PROTOCOL_CONTROL_CSID = 2


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


@dataclass(frozen=True, slots=True)
class Message:
    """One complete RTMP message. `timestamp` is in ms, 32 bits, as on the wire."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int = 3


class _StreamState:
    """What a chunk stream remembers for the headers that follow (fmt 1-3)."""

    __slots__ = ("delta", "extended", "length", "payload", "stream_id", "timestamp", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0  # timestamp field of the last header (absolute after fmt 0)
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False  # last header carried an extended timestamp
        self.payload: bytearray | None = None  # message being received


_HEADER_SIZES = (11, 7, 3, 0)


class ChunkReader:
    """Incremental chunk parser. Handles Set Chunk Size and Abort itself; yields the rest."""

    def __init__(
        self,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_chunk_streams: int = MAX_CHUNK_STREAMS,
        min_chunk_size: int = MIN_CHUNK_SIZE,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_pending_bytes = max_pending_bytes
        self.max_chunk_streams = max_chunk_streams
        self.min_chunk_size = min_chunk_size
        self.message_budget: int | None = None  # messages it may still complete; None: any
        self.messages_total = 0  # complete messages parsed, control messages included
        self._streams: dict[int, _StreamState] = {}
        self._buf = bytearray()
        self._body_csid = -1  # csid whose chunk payload is being read, -1 between chunks
        self._body_remaining = 0
        self._pending_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: unparsed input plus partly received messages."""
        return len(self._buf) + self._pending_bytes

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        messages: list[Message] = []
        pos = 0
        try:
            while True:
                if self._body_csid >= 0:
                    pos = self._read_body(pos, messages)
                    if self._body_csid >= 0:
                        break  # the rest of the chunk has not arrived
                    continue
                new_pos = self._read_header(pos, messages)
                if new_pos is None:
                    break
                pos = new_pos
        finally:
            del self._buf[:pos]
        return messages

    # -- internals ---------------------------------------------------------------------------

    def _read_header(self, pos: int, messages: list[Message]) -> int | None:
        buf = self._buf
        end = len(buf)
        if pos >= end:
            return None
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > end:
                return None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return None
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        header_size = _HEADER_SIZES[fmt]
        if p + header_size > end:
            return None
        state = self._streams.get(csid)
        if state is None and fmt >= 2:
            raise ChunkError(f"chunk stream {csid} starts with a type-{fmt} header")
        in_progress = state is not None and state.payload is not None
        if in_progress and fmt != 3:
            raise ChunkError(f"type-{fmt} header on chunk stream {csid} inside a message")

        ts_field = 0
        length = state.length if state else 0
        type_id = state.type_id if state else 0
        stream_id = state.stream_id if state else 0
        if fmt <= 2:
            ts_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
        if fmt <= 1:
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
        if fmt == 0:
            stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
        p += header_size

        extended = ts_field == EXTENDED_TIMESTAMP if fmt <= 2 else bool(state and state.extended)
        ext_value: int | None = None
        if extended:
            if p + 4 > end:
                return None
            value = int.from_bytes(buf[p : p + 4], "big")
            if in_progress:
                # continuation chunk: skip the value only when it repeats the header's
                assert state is not None
                if value == state.delta:
                    p += 4
            else:
                ext_value = value
                p += 4

        # all of the header is here: commit
        if state is None:
            if len(self._streams) >= self.max_chunk_streams:
                raise ChunkError(f"more than {self.max_chunk_streams} chunk streams")
            state = self._streams[csid] = _StreamState()
        if not in_progress:
            if length > self.max_message_size:
                raise ChunkError(f"message of {length} bytes exceeds {self.max_message_size}")
            if fmt <= 2:
                delta = ext_value if ext_value is not None else ts_field
            else:
                delta = ext_value if ext_value is not None else state.delta
            if fmt == 0:
                state.timestamp = delta
            else:
                state.timestamp = (state.timestamp + delta) & 0xFFFFFFFF
            state.delta = delta
            state.extended = extended
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.payload = bytearray()
        assert state.payload is not None
        self._body_csid = csid
        self._body_remaining = min(self.chunk_size, state.length - len(state.payload))
        if self._pending_bytes + self._body_remaining > self.max_pending_bytes:
            raise ChunkError(f"more than {self.max_pending_bytes} bytes in unfinished messages")
        if self._body_remaining == 0:
            self._finish_chunk(messages)
        return p

    def _read_body(self, pos: int, messages: list[Message]) -> int:
        state = self._streams[self._body_csid]
        assert state.payload is not None
        take = min(self._body_remaining, len(self._buf) - pos)
        if take:
            state.payload += self._buf[pos : pos + take]
            self._pending_bytes += take
            self._body_remaining -= take
        if self._body_remaining == 0:
            self._finish_chunk(messages)
        return pos + take

    def _finish_chunk(self, messages: list[Message]) -> None:
        csid = self._body_csid
        self._body_csid = -1
        state = self._streams[csid]
        assert state.payload is not None
        if len(state.payload) < state.length:
            return
        self.messages_total += 1
        if self.message_budget is not None:
            if self.message_budget <= 0:
                raise BudgetExceeded("messages", "message budget spent")
            self.message_budget -= 1
        payload = bytes(state.payload)
        self._pending_bytes -= len(payload)
        state.payload = None
        message = Message(state.type_id, state.stream_id, state.timestamp, payload, csid)
        if message.type_id == MessageType.SET_CHUNK_SIZE:
            self.chunk_size = parse_chunk_size(payload, self.min_chunk_size)
        elif message.type_id == MessageType.ABORT:
            self._abort(_u32(payload, "Abort"))
        else:
            messages.append(message)

    def _abort(self, csid: int) -> None:
        state = self._streams.get(csid)
        if state is not None and state.payload is not None:
            self._pending_bytes -= len(state.payload)
            state.payload = None


def parse_chunk_size(payload: bytes, min_size: int = MIN_CHUNK_SIZE) -> int:
    size = _u32(payload, "Set Chunk Size") & 0x7FFFFFFF  # the top bit is reserved, always 0
    if not max(1, min_size) <= size <= MAX_CHUNK_SIZE:
        raise ChunkError(f"chunk size {size} out of range {max(1, min_size)}..{MAX_CHUNK_SIZE}")
    return size


def _u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise ChunkError(f"{what} message of {len(payload)} bytes, want 4")
    return int.from_bytes(payload[:4], "big")


class ChunkWriter:
    """Splits messages into chunks, choosing the shortest header the previous chunk allows."""

    def __init__(
        self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, repeat_extended_timestamp: bool = True
    ) -> None:
        self.chunk_size = chunk_size
        self.repeat_extended_timestamp = repeat_extended_timestamp
        self._last: dict[int, tuple[int, int, int, int, int]] = {}  # ts, delta, len, type, sid

    def write(self, message: Message) -> bytes:
        csid = message.csid
        if not 2 <= csid <= 65599:
            raise ValueError(f"csid {csid} out of range")
        ts = message.timestamp & 0xFFFFFFFF
        length = len(message.payload)
        if length >= 1 << 24:
            raise ValueError("message too long for one RTMP message")
        last = self._last.get(csid)
        if last is None or last[4] != message.stream_id or ts < last[0]:
            fmt, field = 0, ts
        else:
            last_ts, last_delta, last_len, last_type, _ = last
            field = ts - last_ts
            if (length, message.type_id) != (last_len, last_type):
                fmt = 1
            elif field != last_delta:
                fmt = 2
            else:
                fmt = 3
        self._last[csid] = (ts, field, length, message.type_id, message.stream_id)
        extended = field >= EXTENDED_TIMESTAMP
        ts24 = EXTENDED_TIMESTAMP if extended else field
        out = bytearray(_basic_header(fmt, csid))
        if fmt <= 2:
            out += ts24.to_bytes(3, "big")
        if fmt <= 1:
            out += length.to_bytes(3, "big") + bytes([message.type_id])
        if fmt == 0:
            out += message.stream_id.to_bytes(4, "little")
        if extended:
            out += field.to_bytes(4, "big")
        payload = message.payload
        out += payload[: self.chunk_size]
        for start in range(self.chunk_size, length, self.chunk_size):
            out += _basic_header(3, csid)
            if extended and self.repeat_extended_timestamp:
                out += field.to_bytes(4, "big")
            out += payload[start : start + self.chunk_size]
        return bytes(out)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    rest = csid - 64
    return bytes([(fmt << 6) | 1, rest & 0xFF, rest >> 8])


# -- protocol control messages -------------------------------------------------------------


def set_chunk_size_message(size: int) -> Message:
    return _control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", size))


def window_ack_size_message(size: int) -> Message:
    return _control(MessageType.WINDOW_ACK_SIZE, struct.pack(">I", size))


def set_peer_bandwidth_message(size: int, limit_type: int = 2) -> Message:
    return _control(MessageType.SET_PEER_BANDWIDTH, struct.pack(">IB", size, limit_type))


def acknowledgement_message(sequence: int) -> Message:
    return _control(MessageType.ACKNOWLEDGEMENT, struct.pack(">I", sequence & 0xFFFFFFFF))


def user_control_message(event: UserControlEvent, value: int) -> Message:
    return _control(MessageType.USER_CONTROL, struct.pack(">HI", event, value & 0xFFFFFFFF))


def _control(type_id: MessageType, payload: bytes) -> Message:
    return Message(type_id, 0, 0, payload, PROTOCOL_CONTROL_CSID)


class ChunkConnection:
    """Both directions of a chunk stream plus the control traffic nobody above cares about.

    `receive()` returns the messages for the session (commands, data, audio, video);
    acknowledgements the peer asked for (Window Acknowledgement Size) and ping responses are
    queued for `data_to_send()`.
    """

    def __init__(
        self,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_chunk_streams: int = MAX_CHUNK_STREAMS,
        min_chunk_size: int = MIN_CHUNK_SIZE,
    ) -> None:
        self.reader = ChunkReader(
            max_message_size=max_message_size,
            max_pending_bytes=max_pending_bytes,
            max_chunk_streams=max_chunk_streams,
            min_chunk_size=min_chunk_size,
        )
        self.writer = ChunkWriter()
        self.bytes_received = 0
        self.peer_window_ack_size = 0  # 0: the peer asked for no acknowledgements
        self.peer_acknowledged = 0
        self._last_ack = 0
        self._out = bytearray()

    def receive(self, data: bytes) -> list[Message]:
        self.bytes_received += len(data)
        messages: list[Message] = []
        for message in self.reader.feed(data):
            if not self._handle_control(message):
                messages.append(message)
        window = self.peer_window_ack_size
        if window and self.bytes_received - self._last_ack >= window:
            self._last_ack = self.bytes_received
            self.send(acknowledgement_message(self.bytes_received))
        return messages

    def send(self, message: Message) -> None:
        self._out += self.writer.write(message)

    def set_chunk_size(self, size: int) -> None:
        """Announce and use a new chunk size for what we send."""
        self.send(set_chunk_size_message(size))
        self.writer.chunk_size = size

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _handle_control(self, message: Message) -> bool:
        kind = message.type_id
        if kind == MessageType.ACKNOWLEDGEMENT:
            self.peer_acknowledged = _u32(message.payload, "Acknowledgement")
        elif kind == MessageType.WINDOW_ACK_SIZE:
            self.peer_window_ack_size = _u32(message.payload, "Window Acknowledgement Size")
        elif kind == MessageType.SET_PEER_BANDWIDTH:
            if len(message.payload) < 5:
                raise ChunkError("Set Peer Bandwidth message too short")
        elif kind == MessageType.USER_CONTROL:
            if len(message.payload) < 2:
                raise ChunkError("User Control message too short")
            event = int.from_bytes(message.payload[:2], "big")
            if event == UserControlEvent.PING_REQUEST:
                value = _u32(message.payload[2:], "ping request")
                self.send(user_control_message(UserControlEvent.PING_RESPONSE, value))
        else:
            return False
        return True
