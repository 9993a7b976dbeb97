"""AMF0, the value encoding of RTMP commands and metadata.

    marker  type           Python
    0x00    number         float
    0x01    boolean        bool
    0x02    string         str (u16 length)
    0x03    object         dict[str, value]       ends with 00 00 09
    0x05    null           None
    0x06    undefined      UNDEFINED
    0x07    reference      refused (AmfError)
    0x08    ECMA array     EcmaArray (a dict)     u32 count hint, ends with 00 00 09
    0x09    object end     only inside objects
    0x0A    strict array   list
    0x0B    date           AmfDate
    0x0C    long string    str (u32 length)
    0x0D    unsupported    UNDEFINED
    0x0F    XML document   str
    0x10    typed object   dict (class name dropped)

Movie clip, record set and the AMF3 switch are refused. Decoding is bounded in nesting depth
and item count; anything malformed raises `AmfError`, whose message never quotes the data.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from pipeline.errors import AmfError

logger = logging.getLogger(__name__)

MAX_DEPTH = 32
MAX_ITEMS = 65_536


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@dataclass(frozen=True, slots=True)
class AmfDate:
    milliseconds: float  # since the Unix epoch, UTC
    timezone_minutes: int = 0  # reserved; should be 0


AmfValue = Union[  # a recursive alias: the forward references need Union
    float,
    bool,
    str,
    None,
    _Undefined,
    AmfDate,
    "dict[str, AmfValue]",
    "list[AmfValue]",
]


class EcmaArray(dict[str, AmfValue]):
    """An associative array (what onMetaData usually is); encodes back as marker 0x08."""


NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.items_left = max_items

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError(f"truncated AMF0 data: need {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def number(self) -> float:
        value: float = struct.unpack(">d", self.take(8))[0]
        return value

    def text(self, n: int) -> str:
        return self.take(n).decode("utf-8", errors="replace")

    def count(self) -> None:
        self.items_left -= 1
        if self.items_left < 0:
            raise AmfError("too many AMF0 values")

    def value(self, depth: int) -> AmfValue:
        if depth > self.max_depth:
            raise AmfError(f"AMF0 nesting deeper than {self.max_depth}")
        self.count()
        marker = self.u8()
        if marker == NUMBER:
            return self.number()
        if marker == BOOLEAN:
            return self.u8() != 0
        if marker == STRING:
            return self.text(self.u16())
        if marker in (LONG_STRING, XML_DOCUMENT):
            return self.text(self.u32())
        if marker == OBJECT:
            return self.properties({}, depth, strict_end=True)
        if marker == TYPED_OBJECT:
            self.take(self.u16())  # class name
            return self.properties({}, depth, strict_end=True)
        if marker == ECMA_ARRAY:
            self.u32()  # count hint; encoders disagree on it, the end marker is what counts
            return self.properties(EcmaArray(), depth, strict_end=False)
        if marker == STRICT_ARRAY:
            n = self.u32()
            if n > len(self.data) - self.pos:  # every value takes at least one byte
                raise AmfError(f"strict array of {n} values in {len(self.data) - self.pos} bytes")
            return [self.value(depth + 1) for _ in range(n)]
        if marker == NULL:
            return None
        if marker in (UNDEFINED_MARKER, UNSUPPORTED):
            return UNDEFINED
        if marker == DATE:
            ms = self.number()
            tz = int.from_bytes(self.take(2), "big", signed=True)
            return AmfDate(ms, tz)
        if marker == REFERENCE:
            raise AmfError("AMF0 references are not supported")
        if marker == AVMPLUS:
            raise AmfError("AMF3 values are not supported")
        if marker == OBJECT_END:
            raise AmfError("AMF0 object end marker outside an object")
        raise AmfError(f"unknown or unsupported AMF0 marker 0x{marker:02x}")

    def properties(
        self, into: dict[str, AmfValue], depth: int, *, strict_end: bool
    ) -> dict[str, AmfValue]:
        while True:
            if not strict_end and self.pos == len(self.data):
                return into  # some encoders end an ECMA array with the data, no end marker
            key = self.text(self.u16())
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return into
            into[key] = self.value(depth + 1)


def decode(
    data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS
) -> list[AmfValue]:
    """Decode every value in `data`."""
    decoder = _Decoder(bytes(data), max_depth, max_items)
    values: list[AmfValue] = []
    while decoder.pos < len(decoder.data):
        values.append(decoder.value(0))
    return values


def decode_one(
    data: bytes, offset: int = 0, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS
) -> tuple[AmfValue, int]:
    """Decode the value at `offset`; return it and the offset after it."""
    decoder = _Decoder(bytes(data), max_depth, max_items)
    decoder.pos = offset
    return decoder.value(0), decoder.pos


def encode(*values: object) -> bytes:
    """Encode Python values as AMF0 (ints and floats as numbers, dicts as objects)."""
    out = bytearray()
    for value in values:
        _encode(value, out, 0)
    return bytes(out)


def _encode(value: object, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 nesting deeper than {MAX_DEPTH}")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes([BOOLEAN, 1 if value else 0])
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8", errors="surrogatepass")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += len(raw).to_bytes(2, "big")
        else:
            out.append(LONG_STRING)
            out += len(raw).to_bytes(4, "big")
        out += raw
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += struct.pack(">dh", value.milliseconds, value.timezone_minutes)
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += len(value).to_bytes(4, "big")
        _encode_properties(value, out, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(value, out, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += len(value).to_bytes(4, "big")
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_properties(value: Mapping[Any, object], out: bytearray, depth: int) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            raise AmfError("AMF0 object keys must be strings")
        raw = key.encode("utf-8", errors="surrogatepass")
        if len(raw) > 0xFFFF:
            raise AmfError("AMF0 object key too long")
        out += len(raw).to_bytes(2, "big") + raw
        _encode(item, out, depth + 1)
    out += b"\x00\x00\x09"
