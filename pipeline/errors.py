"""onair's error tree.

OnairError
├── ConfigError            a setting is missing or malformed (names the ONAIR_* variable)
├── ProtocolError          outside bytes broke a wire format; the connection is closed
│   ├── HandshakeError     RTMP handshake
│   ├── ChunkError         RTMP chunk stream
│   ├── AmfError           AMF0 value
│   ├── FlvError           FLV tag / AVC / AAC config
│   └── BudgetExceeded     a client spent its byte, message or CPU budget (names which)
├── AuthError              a stream key or user token was refused
├── CodecError             a schema-encoded event could not be read; skip and count it
│   ├── UnknownSchemaError the fingerprint names no schema we know
│   └── CorruptPayloadError the header or body is not valid Avro
├── StoreError             the object store failed
│   └── ObjectNotFound     no object under that key
├── InvalidJson            a JSON body or frame from outside is malformed or not valid Unicode
├── BodyTooLarge           a request body is over its byte budget
├── NotFound               a channel, stream or VOD that does not exist
├── MediaError             a GOP could not be decoded or encoded
├── DeliveryFailed         the brokers did not acknowledge a write
├── PublishAborted         the ingest ended a publish for a reason of its own (the RTMP server
│   │                      closes it with that reason)
│   └── LeaseLost          the ingest can no longer prove it owns the channel (fenced)
└── TopicMismatch          a topic's partition count differs from its spec (never changed
                           on its own: names the topic and the way to migrate)
"""

from __future__ import annotations


class OnairError(Exception):
    """Base of every error onair raises on purpose."""


class ConfigError(OnairError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ProtocolError(OnairError):
    pass


class HandshakeError(ProtocolError):
    pass


class ChunkError(ProtocolError):
    pass


class AmfError(ProtocolError):
    pass


class FlvError(ProtocolError):
    pass


class BudgetExceeded(ProtocolError):
    """A client used more than a connection is allowed (`budget`: what ran out)."""

    def __init__(self, budget: str, problem: str) -> None:
        super().__init__(problem)
        self.budget = budget


class AuthError(OnairError):
    pass


class ChannelBusy(AuthError):
    pass


class CodecError(OnairError):
    pass


class UnknownSchemaError(CodecError):
    pass


class CorruptPayloadError(CodecError):
    pass


class StoreError(OnairError):
    pass


class ObjectNotFound(StoreError):
    pass


class InvalidJson(OnairError):
    pass


class BodyTooLarge(OnairError):
    pass


class NotFound(OnairError):
    pass


class MediaError(OnairError):
    pass


class DeliveryFailed(OnairError):
    pass


class PublishAborted(OnairError):
    pass


class LeaseLost(PublishAborted):
    pass


class TopicMismatch(OnairError):
    pass
