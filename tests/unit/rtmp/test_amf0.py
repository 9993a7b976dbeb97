from __future__ import annotations

import math
import struct

import pytest

from gateway.rtmp import amf0
from gateway.rtmp.amf0 import UNDEFINED, AmfDate, AmfValue, EcmaArray
from gateway.rtmp.chunk import ChunkReader, MessageType
from pipeline.errors import AmfError
from tests.unit.rtmp.conftest import Capture


def s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def num(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


END = b"\x00\x00\x09"

DECODE_CASES: list[tuple[str, bytes, AmfValue]] = [
    ("number", num(1.5), 1.5),
    ("boolean-true", b"\x01\x01", True),
    ("boolean-false", b"\x01\x00", False),
    ("string", b"\x02" + s("connect"), "connect"),
    ("string-utf8", b"\x02" + s("h\u00e9llo \u2603"), "h\u00e9llo \u2603"),
    ("string-invalid-utf8-replaced", b"\x02\x00\x02\xff\xfe", "\ufffd\ufffd"),
    (
        "object",
        b"\x03" + s("app") + b"\x02" + s("live") + s("n") + num(2) + END,
        {"app": "live", "n": 2.0},
    ),
    (
        "nested-object",
        b"\x03" + s("o") + b"\x03" + s("x") + b"\x05" + END + END,
        {"o": {"x": None}},
    ),
    ("null", b"\x05", None),
    ("undefined", b"\x06", UNDEFINED),
    ("unsupported-marker-as-undefined", b"\x0d", UNDEFINED),
    ("ecma-array", b"\x08\x00\x00\x00\x01" + s("width") + num(640) + END, {"width": 640.0}),
    ("ecma-array-wrong-count", b"\x08\x00\x00\x00\x09" + s("a") + num(1) + END, {"a": 1.0}),
    ("ecma-array-without-end-marker", b"\x08\x00\x00\x00\x01" + s("a") + num(1), {"a": 1.0}),
    ("strict-array", b"\x0a\x00\x00\x00\x02" + num(1) + b"\x02" + s("x"), [1.0, "x"]),
    ("date", b"\x0b" + struct.pack(">dh", 1.7e12, 0), AmfDate(1.7e12, 0)),
    ("long-string", b"\x0c" + (3).to_bytes(4, "big") + b"abc", "abc"),
    ("xml-document", b"\x0f" + (4).to_bytes(4, "big") + b"<a/>", "<a/>"),
    ("typed-object", b"\x10" + s("Cls") + s("k") + b"\x01\x01" + END, {"k": True}),
    ("empty-key-that-is-not-the-end", b"\x03" + s("") + num(3) + END, {"": 3.0}),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES]
)
def test_decodes(data: bytes, expected: AmfValue) -> None:
    assert amf0.decode(data) == [expected]
    value, end = amf0.decode_one(b"junk" + data, 4)
    assert value == expected
    assert end == len(data) + 4


def test_ecma_array_decodes_as_ecma_array_and_encodes_back() -> None:
    data = b"\x08\x00\x00\x00\x01" + s("a") + num(1) + END
    (value,) = amf0.decode(data)
    assert isinstance(value, EcmaArray)
    assert amf0.encode(value) == data


def test_decodes_a_sequence_of_values() -> None:
    data = b"\x02" + s("_result") + num(1) + b"\x05" + b"\x03" + s("code") + b"\x02" + s("ok") + END
    assert amf0.decode(data) == ["_result", 1.0, None, {"code": "ok"}]


ERROR_CASES = [
    ("reference", b"\x07\x00\x01", "references"),
    ("amf3-switch", b"\x11\x04\x01", "AMF3"),
    ("movieclip", b"\x04", "unsupported"),
    ("recordset", b"\x0e", "unsupported"),
    ("unknown-marker", b"\x42", "unknown"),
    ("object-end-at-top-level", b"\x09", "outside an object"),
    ("truncated-number", b"\x00\x01\x02", "truncated"),
    ("truncated-string", b"\x02\x00\x10abc", "truncated"),
    ("truncated-long-string", b"\x0c\xff\xff\xff\xff", "truncated"),
    ("object-without-end", b"\x03" + s("a") + num(1), "truncated"),
    ("strict-array-count-beyond-data", b"\x0a\x7f\xff\xff\xff\x05", "strict array"),
    ("too-deep", b"\x0a\x00\x00\x00\x01" * 40 + b"\x05", "deeper"),
    ("too-deep-objects", (b"\x03" + s("k")) * 40 + b"\x05", "deeper"),
    ("too-many-items", b"\x0a\x00\x01\x00\x00" + b"\x05" * 0x10000, "too many"),
]


@pytest.mark.parametrize(
    ("data", "match"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_refuses(data: bytes, match: str) -> None:
    with pytest.raises(AmfError, match=match):
        amf0.decode(data)


ROUND_TRIP: list[tuple[str, object]] = [
    ("number", 3.25),
    ("int-as-number", 7),
    ("infinity", math.inf),
    ("bool", False),
    ("string", "NetStream.Publish.Start"),
    ("long-string", "x" * 70_000),
    ("null", None),
    ("undefined", UNDEFINED),
    ("object", {"level": "status", "code": "c", "n": 1.0, "nested": {"list": [1.0, "a", None]}}),
    ("ecma-array", EcmaArray({"framerate": 30.0, "encoder": "obs"})),
    ("strict-array", [1.0, [2.0, [3.0]]]),
    ("date", AmfDate(1234.5, 60)),
]


@pytest.mark.parametrize("value", [c[1] for c in ROUND_TRIP], ids=[c[0] for c in ROUND_TRIP])
def test_round_trips(value: object) -> None:
    decoded = amf0.decode(amf0.encode(value))
    expected = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    assert decoded == [expected]


@pytest.mark.parametrize(
    "value",
    [object(), {1: "non-string key"}, b"bytes", {"k" * 70_000: 1}],
    ids=["object", "int-key", "bytes", "key-too-long"],
)
def test_encode_refuses_what_amf0_cannot_say(value: object) -> None:
    with pytest.raises(AmfError):
        amf0.encode(value)


def test_decodes_ffmpeg_commands_and_metadata(ffmpeg_capture: Capture) -> None:
    messages = ChunkReader().feed(ffmpeg_capture.client_bytes[1 + 2 * 1536 :])
    amf = [
        amf0.decode(m.payload)
        for m in messages
        if m.type_id in (MessageType.COMMAND_AMF0, MessageType.DATA_AMF0)
    ]
    names = [values[0] for values in amf]
    assert names[:6] == [
        "connect",
        "releaseStream",
        "FCPublish",
        "createStream",
        "publish",
        "@setDataFrame",
    ]
    connect = amf[0][2]
    assert isinstance(connect, dict)
    assert connect["app"] == "live"
    metadata = amf[5][2]
    assert isinstance(metadata, EcmaArray)
    assert metadata["width"] == 640.0
    assert metadata["framerate"] == 30.0
    assert metadata["audiosamplerate"] == 48000.0
