"""One RTMP publish connection as a state machine, sans-I/O: bytes in, bytes out + events.

    HANDSHAKE ──C0/C1/C2──▶ CONNECTING ──connect(app=live)──▶ CONNECTED
        releaseStream, FCPublish, createStream: answered with _result
    CONNECTED ──publish(key)──▶ PUBLISH_PENDING   (event PublishRequested)
        accept_publish() ──▶ PUBLISHING  (onStatus NetStream.Publish.Start)
        refuse_publish() ──▶ CLOSED      (onStatus level=error, then the caller closes)
    PUBLISHING: @setDataFrame → Metadata; audio/video → ConfigReady, Media
        FCUnpublish / deleteStream / closeStream ──▶ CONNECTED (event PublishEnded)
    play ──▶ CLOSED (this server only ingests)

Messages that arrive while the publish decision is pending are held (bounded) and run after
`accept_publish()`. The stream key is never logged and never part of an error message.

Until a publish has been accepted the connection is anonymous and gets a small budget
(`RtmpLimits`): so many bytes and messages in all, and data messages are not even decoded
(only commands are: `connect` and `publish` are commands). Afterwards messages are metered
per second. Running out raises `BudgetExceeded`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from gateway.rtmp import amf0
from gateway.rtmp.chunk import (
    MAX_MESSAGE_SIZE,
    ChunkConnection,
    Message,
    MessageType,
    UserControlEvent,
    set_peer_bandwidth_message,
    user_control_message,
    window_ack_size_message,
)
from gateway.rtmp.handshake import ServerHandshake
from gateway.rtmp.limits import Allowance, RtmpLimits
from gateway.rtmp.to_media import FlvToMedia
from pipeline.errors import AmfError, BudgetExceeded, ProtocolError
from pipeline.media import CodecConfig, MediaUnit

logger = logging.getLogger(__name__)

APP = "live"
WINDOW_ACK_SIZE = 2_500_000
OUT_CHUNK_SIZE = 4096
PUBLISH_STREAM_ID = 1
COMMAND_CSID = 3
STATUS_CSID = 5
MAX_HELD_MESSAGES = 256
MAX_HELD_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PublishRequested:
    app: str
    stream_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConfigReady:
    config: CodecConfig


@dataclass(frozen=True, slots=True)
class Media:
    unit: MediaUnit


@dataclass(frozen=True, slots=True)
class Metadata:
    metadata: dict[str, object]


@dataclass(frozen=True, slots=True)
class PublishEnded:
    reason: str


Event = PublishRequested | ConfigReady | Media | Metadata | PublishEnded


class SessionState(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish_pending"
    PUBLISHING = "publishing"
    CLOSED = "closed"


class RtmpSession:
    """Feed what the client sent; send what comes back; act on the events.

    When `closing` turns true the caller sends the returned bytes and closes the connection.
    """

    def __init__(
        self,
        *,
        app: str = APP,
        max_message_size: int = MAX_MESSAGE_SIZE,
        random_bytes: Callable[[int], bytes] | None = None,
        limits: RtmpLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.state = SessionState.HANDSHAKE
        self.closing = False
        self.close_reason = ""
        self.limits = limits if limits is not None else RtmpLimits()
        self._clock = clock
        self._handshake = (
            ServerHandshake(random_bytes=random_bytes) if random_bytes else ServerHandshake()
        )
        self._chunks = ChunkConnection(
            max_message_size=max_message_size, min_chunk_size=self.limits.min_chunk_size
        )
        self._prepublish_bytes = 0
        self._messages: Allowance | None = None  # after the first accepted publish
        self._media = FlvToMedia()
        self._stream_id = PUBLISH_STREAM_ID
        self._held: list[Message] = []
        self._held_bytes = 0

    @property
    def dropped_units(self) -> int:
        return self._media.dropped_units

    @property
    def buffered_bytes(self) -> int:
        """Client bytes held: unparsed input, partly received and held messages."""
        return self._chunks.reader.buffered_bytes + self._held_bytes

    # -- the caller's side -------------------------------------------------------------------

    def feed(self, data: bytes) -> tuple[bytes, list[Event]]:
        """Consume client bytes; return bytes to send and what happened."""
        if self.state is SessionState.CLOSED:
            return b"", []
        self._charge_bytes(len(data))
        events: list[Event] = []
        out = b""
        if self.state is SessionState.HANDSHAKE:
            out = self._handshake.feed(data)
            if not self._handshake.done:
                return out, events
            self.state = SessionState.CONNECTING
            data = self._handshake.leftover
        for message in self._receive(data):
            if self.state is SessionState.CLOSED:
                break
            if self.state is SessionState.PUBLISH_PENDING:
                self._hold(message)
            else:
                self._handle(message, events)
        return out + self._chunks.data_to_send(), events

    def accept_publish(self) -> tuple[bytes, list[Event]]:
        """The publish may go ahead: tell the client and run what it sent meanwhile."""
        if self.state is not SessionState.PUBLISH_PENDING:
            raise RuntimeError(f"accept_publish in state {self.state.value}")
        self.state = SessionState.PUBLISHING
        if self._messages is None:
            rate = self.limits.max_messages_per_s
            self._messages = Allowance(rate, 2 * rate, self._clock())
        self._chunks.send(user_control_message(UserControlEvent.STREAM_BEGIN, self._stream_id))
        self._on_status("status", "NetStream.Publish.Start", "Publishing started.")
        events: list[Event] = []
        held, self._held, self._held_bytes = self._held, [], 0
        for message in held:
            if self.state is SessionState.CLOSED:
                break
            self._handle(message, events)
        return self._chunks.data_to_send(), events

    def refuse_publish(self, description: str, code: str = "NetStream.Publish.BadName") -> bytes:
        """Refuse the pending publish: an error status, then the connection is to close."""
        self._on_status("error", code, description)
        self._close("publish refused")
        return self._chunks.data_to_send()

    def connection_lost(self) -> list[Event]:
        """The socket closed or failed: end a running publish."""
        events: list[Event] = []
        if self.state is SessionState.PUBLISHING:
            self._end_publish("disconnected", events)
        self.state = SessionState.CLOSED
        return events

    # -- budgets -----------------------------------------------------------------------------

    def _charge_bytes(self, size: int) -> None:
        if self._messages is not None:
            return  # a publish was accepted: metered per message from then on
        self._prepublish_bytes += size
        limit = self.limits.prepublish_max_bytes
        if self._prepublish_bytes > limit:
            problem = f"more than {limit} bytes before the publish was accepted"
            raise BudgetExceeded("bytes", problem)

    def _receive(self, data: bytes) -> list[Message]:
        reader = self._chunks.reader
        allowance = self._messages
        if allowance is None:
            left = self.limits.prepublish_max_messages - reader.messages_total
            reader.message_budget = max(0, left)
        else:
            reader.message_budget = int(allowance.refill(self._clock()))
        granted = reader.message_budget
        try:
            return self._chunks.receive(data)
        except BudgetExceeded:
            if allowance is None:
                problem = (
                    f"more than {self.limits.prepublish_max_messages} messages before the "
                    "publish was accepted"
                )
            else:
                problem = f"more than {self.limits.max_messages_per_s:g} messages a second"
            raise BudgetExceeded("messages", problem) from None
        finally:
            if allowance is not None:
                allowance.tokens -= granted - (reader.message_budget or 0)

    # -- messages ----------------------------------------------------------------------------

    def _hold(self, message: Message) -> None:
        self._held.append(message)
        self._held_bytes += len(message.payload)
        if len(self._held) > MAX_HELD_MESSAGES or self._held_bytes > MAX_HELD_BYTES:
            raise ProtocolError("too much data before the publish was accepted")

    def _handle(self, message: Message, events: list[Event]) -> None:
        kind = message.type_id
        if kind in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            self._command(_amf_values(message), message.stream_id, events)
        elif kind in (MessageType.DATA_AMF0, MessageType.DATA_AMF3):
            if self.state is SessionState.PUBLISHING:  # nobody else's data is worth decoding
                self._data(_amf_values(message), events)
        elif kind in (MessageType.VIDEO, MessageType.AUDIO):
            if self.state is not SessionState.PUBLISHING:
                return
            if kind == MessageType.VIDEO:
                outputs = self._media.video(message.timestamp, message.payload)
            else:
                outputs = self._media.audio(message.timestamp, message.payload)
            events.extend(_media_events(outputs))
        # anything else (shared objects, aggregates, unknown types) is ignored

    def _command(self, values: list[amf0.AmfValue], stream_id: int, events: list[Event]) -> None:
        if not values or not isinstance(values[0], str):
            raise AmfError("command message without a command name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[2:]
        if self.state is SessionState.CONNECTING:
            if name != "connect":
                raise ProtocolError("command before connect")
            self._connect(txn, args)
        elif name == "connect":
            raise ProtocolError("connect on a connected session")
        elif name in ("releaseStream", "FCPublish"):
            if txn:
                self._send_command("_result", txn, None, amf0.UNDEFINED)
        elif name == "createStream":
            self._send_command("_result", txn, None, float(PUBLISH_STREAM_ID))
        elif name == "publish":
            self._publish(args, stream_id, events)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.state is SessionState.PUBLISHING:
                self._end_publish("unpublished", events)
        elif name in ("play", "play2"):
            self._stream_id = stream_id or PUBLISH_STREAM_ID
            self._on_status("error", "NetStream.Play.Failed", "This server only ingests.")
            self._close("play refused")
        # other commands (_checkbw, getStreamLength, ...) need no answer from an ingest server

    def _connect(self, txn: float, args: list[amf0.AmfValue]) -> None:
        command = args[0] if args and isinstance(args[0], dict) else {}
        app = command.get("app")
        app = app.split("?", 1)[0].strip("/") if isinstance(app, str) else ""
        if app != self.app:
            # never echo the app: OBS users paste "live/<key>" into the server field
            self._send_command(
                "_error",
                txn,
                None,
                _status("error", "NetConnection.Connect.Rejected", "Unknown application."),
            )
            self._close("unknown application")
            return
        self.state = SessionState.CONNECTED
        self._chunks.send(window_ack_size_message(WINDOW_ACK_SIZE))
        self._chunks.send(set_peer_bandwidth_message(WINDOW_ACK_SIZE))
        self._chunks.set_chunk_size(OUT_CHUNK_SIZE)
        result = _status("status", "NetConnection.Connect.Success", "Connection succeeded.")
        result["objectEncoding"] = 0.0
        self._send_command(
            "_result", txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}, result
        )

    def _publish(self, args: list[amf0.AmfValue], stream_id: int, events: list[Event]) -> None:
        if self.state is not SessionState.CONNECTED:
            self._on_status("error", "NetStream.Publish.BadName", "Already publishing.")
            return
        name = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        self._stream_id = stream_id or PUBLISH_STREAM_ID
        self._media = FlvToMedia()
        self.state = SessionState.PUBLISH_PENDING
        events.append(PublishRequested(self.app, name.split("?", 1)[0]))

    def _data(self, values: list[amf0.AmfValue], events: list[Event]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if self.state is not SessionState.PUBLISHING or len(values) < 2:
            return
        if values[0] == "onMetaData" and isinstance(values[1], dict):
            metadata: dict[str, object] = dict(values[1])
            self._media.set_metadata(metadata)
            events.append(Metadata(metadata))

    def _end_publish(self, reason: str, events: list[Event]) -> None:
        events.extend(_media_events(self._media.flush()))
        events.append(PublishEnded(reason))
        self.state = SessionState.CONNECTED

    # -- replies -----------------------------------------------------------------------------

    def _send_command(self, name: str, txn: float, *args: object) -> None:
        payload = amf0.encode(name, txn, *args)
        self._chunks.send(Message(MessageType.COMMAND_AMF0, 0, 0, payload, COMMAND_CSID))

    def _on_status(self, level: str, code: str, description: str) -> None:
        payload = amf0.encode("onStatus", 0.0, None, _status(level, code, description))
        self._chunks.send(
            Message(MessageType.COMMAND_AMF0, self._stream_id, 0, payload, STATUS_CSID)
        )

    def _close(self, reason: str) -> None:
        self.closing = True
        self.close_reason = reason
        self.state = SessionState.CLOSED


def _status(level: str, code: str, description: str) -> dict[str, object]:
    return {"level": level, "code": code, "description": description}


def _amf_values(message: Message) -> list[amf0.AmfValue]:
    payload = message.payload
    if message.type_id in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3) and payload[:1] == (
        b"\x00"
    ):
        payload = payload[1:]  # AMF3 messages may start with a format byte, then AMF0
    return amf0.decode(payload)


def _media_events(outputs: list[CodecConfig | MediaUnit]) -> list[Event]:
    return [ConfigReady(o) if isinstance(o, CodecConfig) else Media(o) for o in outputs]
