"""The coverage-guided fuzz targets' bodies: one function per parser family, bytes in.

Each function feeds the bytes to the parsers of one family and checks what must hold
whatever the bytes are: only the documented exceptions come out (every other exception,
and any failed assertion, is a crash for the fuzzer), what a parser holds stays within its
bounds, and what was accepted survives the next step (re-encoding, a record, a store key).
The `fuzz_<name>.py` scripts next to this module hand a function to atheris; without atheris
`tests/unit/test_fuzz_corpus.py` replays every committed seed through the same functions, so
a crash once found and added to a corpus stays a regression test in `make test`.

Most targets read their first byte or two as a mode (which parser, how to slice the input),
so one corpus can reach every parser of a family; `make_corpus.py` writes seeds that way.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

from gateway.origin.hls import STREAM_ID, RangeNotSatisfiable, etag_matches, parse_range
from gateway.rtmp import amf0
from gateway.rtmp.chunk import MAX_PENDING_BYTES, ChunkReader
from gateway.rtmp.flv import (
    AAC_CHANNELS,
    MAX_MACROBLOCKS_PER_SIDE,
    AacInfo,
    AacSequenceHeader,
    AvcNalus,
    AvcSequenceHeader,
    SpsInfo,
    check_avcc_framing,
    parse_audio_specific_config,
    parse_audio_tag,
    parse_avc_config,
    parse_sps,
    parse_video_tag,
)
from gateway.rtmp.handshake import PACKET_SIZE
from gateway.rtmp.limits import RtmpLimits
from gateway.rtmp.session import MAX_HELD_BYTES, PublishRequested, RtmpSession
from gateway.rtmp.to_media import FlvToMedia
from pipeline import keys
from pipeline.channels import InvalidChannelName, check_channel_name, new_stream_id
from pipeline.chat import ACTIONS, ModerationAction, ModerationState, action_from_fields
from pipeline.errors import (
    AuthError,
    CodecError,
    FlvError,
    InvalidJson,
    ProtocolError,
    StoreError,
)
from pipeline.jsonbody import parse_json_object
from pipeline.media import CodecConfig, MediaUnit
from pipeline.store import check_key
from pipeline.tokens import issue_token, verify_token
from schemas.codec import HEADER_SIZE, MAGIC, Codec
from tests.unit.origin.test_fuzz import assert_in_layout, route_target

MAX_SIDE_PIXELS = 16 * MAX_MACROBLOCKS_PER_SIDE

# -- RTMP: chunk stream and the publish session -----------------------------------------------

SLICES = (1, 7, 64, 128, 1000, 4096, 16384, 65536)
# C0 + C1 + C2 as a client sends them; mode 2 puts it in front so the bytes are the chunk stream
HANDSHAKE = b"\x03" + bytes(PACKET_SIZE) + bytes(PACKET_SIZE)
LIMITS = RtmpLimits()


class _Clock:
    """A clock that moves 1 ms a call: runs repeat exactly, and budgets still refill."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 0.001
        return self.now_s


def _pieces(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


def rtmp(data: bytes) -> None:
    """byte 0: mode (0: ChunkReader alone, 1: a session from its first byte, 2: a session
    after a well-formed handshake); byte 1: the slice size each feed gets; the rest: input."""
    if len(data) < 2:
        return
    mode, step, payload = data[0] % 3, SLICES[data[1] % len(SLICES)], data[2:]
    if mode == 0:
        reader = ChunkReader(min_chunk_size=LIMITS.min_chunk_size)
        fed = 0
        try:
            for piece in _pieces(payload, step):
                fed += len(piece)
                for message in reader.feed(piece):
                    assert 0 <= message.type_id <= 255 and 0 <= message.timestamp < 2**32
                assert reader.buffered_bytes <= min(fed, MAX_PENDING_BYTES + 18)
        except ProtocolError:
            pass
        return
    session = RtmpSession(random_bytes=bytes, limits=LIMITS, clock=_Clock())
    fed = 0
    published = False
    try:
        pieces = _pieces(payload, step)
        for piece in [HANDSHAKE, *pieces] if mode == 2 else pieces:
            fed += len(piece)
            _out, events = session.feed(piece)
            if any(isinstance(e, PublishRequested) for e in events):
                session.accept_publish()
                published = True
            if not published:  # an anonymous client: its whole budget, then closed
                assert fed <= LIMITS.prepublish_max_bytes
            assert session.buffered_bytes <= min(fed, MAX_PENDING_BYTES + MAX_HELD_BYTES + 18)
            if session.closing:
                assert session.feed(b"\x00") == (b"", [])
                break
        session.connection_lost()
    except ProtocolError:
        pass


# -- AMF0 ----------------------------------------------------------------------------------------


def amf0_values(data: bytes) -> None:
    """Decode; what decodes re-encodes to bytes that decode and re-encode to the same bytes."""
    try:
        values = amf0.decode(data)
    except ProtocolError:
        return
    first = amf0.encode(*values)
    assert amf0.encode(*amf0.decode(first)) == first


# -- FLV tags, AVC/AAC configuration, FLV → media -----------------------------------------------


def _check_sps(width: int, height: int) -> None:
    assert 0 < width <= MAX_SIDE_PIXELS and 0 < height <= MAX_SIDE_PIXELS


def _flv_tags(data: bytes) -> list[tuple[bool, int, bytes]]:
    """Tags as [kind (odd: video), timestamp (4 bytes), length (2 bytes), body]..."""
    tags = []
    pos = 0
    while pos + 7 <= len(data):
        size = int.from_bytes(data[pos + 5 : pos + 7], "big")
        body = data[pos + 7 : pos + 7 + size]
        tags.append((data[pos] % 2 == 1, int.from_bytes(data[pos + 1 : pos + 5], "big"), body))
        pos += 7 + size
    return tags


def flv(data: bytes) -> None:
    """byte 0: which parser (video tag, audio tag, avcC, SPS, AudioSpecificConfig, a tag
    sequence through FlvToMedia); the rest: its input."""
    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    if mode == 5:
        _to_media(body)
        return
    parse: Callable[[bytes], object] = (
        parse_video_tag,
        parse_audio_tag,
        parse_avc_config,
        parse_sps,
        parse_audio_specific_config,
    )[mode]
    try:
        result = parse(body)
    except FlvError:
        return
    if isinstance(result, AvcSequenceHeader):
        _check_sps(result.sps.width, result.sps.height)
    elif isinstance(result, AvcNalus):
        check_avcc_framing(result.data)  # what was accepted is well framed
    elif isinstance(result, SpsInfo):
        _check_sps(result.width, result.height)
    elif isinstance(result, AacSequenceHeader | AacInfo):
        info = result.info if isinstance(result, AacSequenceHeader) else result
        assert info.sample_rate > 0 and info.channels in AAC_CHANNELS


def _to_media(data: bytes) -> None:
    media = FlvToMedia(fps_probe_frames=3)
    out: list[CodecConfig | MediaUnit] = []
    for video, timestamp_ms, body in _flv_tags(data):
        with contextlib.suppress(FlvError):
            out += media.video(timestamp_ms, body) if video else media.audio(timestamp_ms, body)
    out += media.flush()
    configured = False
    for item in out:
        if isinstance(item, CodecConfig):
            _check_sps(item.width, item.height)
            assert math.isfinite(item.fps) and item.fps > 0
            configured = True
        else:
            assert configured, "a media unit before any codec configuration"
            assert item.payload, "an empty media unit"


# -- Avro single-object decoding ------------------------------------------------------------------

CODEC = Codec()
FINGERPRINTS = sorted(schema.fingerprint for schema in CODEC.schemas.values())


def avro(data: bytes) -> None:
    """byte 0: below the number of schemas, that schema's header goes in front (so the body
    is fuzzed); otherwise the rest is the whole message."""
    if not data:
        return
    selector, rest = data[0], data[1:]
    message = MAGIC + FINGERPRINTS[selector] + rest if selector < len(FINGERPRINTS) else rest
    try:
        name, record = CODEC.decode(message)
    except CodecError:
        return
    first = CODEC.encode(name, record)
    again_name, again = CODEC.decode(first)
    assert again_name == name and CODEC.encode(name, again) == first
    assert len(first) >= HEADER_SIZE


# -- user tokens -----------------------------------------------------------------------------------

SECRET = "fuzz-secret"
NOW_S = 1_700_000_000
ISSUED = frozenset(
    issue_token(SECRET, user, ttl_s, now_s=NOW_S)
    for user in ("alice", "bob_2", "x" * 25)
    for ttl_s in (60, 86_400)
)


REFUSALS = frozenset(("malformed token", "bad token signature", "token expired"))


def tokens(data: bytes) -> None:
    """A token verifies only if it is, byte for byte, one that was issued (one spelling)."""
    text = data.decode("utf-8", errors="replace") if data[:1] == b"\xff" else data.decode("latin-1")
    try:
        claims = verify_token(SECRET, text, now_s=NOW_S)
    except AuthError as exc:
        assert str(exc) in REFUSALS  # never anything of the token
        return
    assert text in ISSUED, "a token nobody issued verified"
    assert claims.expires_s > NOW_S


# -- JSON bodies and what the API does with them ---------------------------------------------------


def _writable(value: Any) -> bytes:
    """As Starlette's JSONResponse writes a body (`allow_nan=False`, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


def json_body(data: bytes) -> None:
    """A body is refused (InvalidJson) or writes back out; a moderation action made from it is
    refused (ValueError) or becomes an Avro record, moderation state and a JSON answer."""
    try:
        body = parse_json_object(data)
    except InvalidJson:
        return
    written = _writable(body)
    assert _writable(parse_json_object(written)) == written
    for kind in ACTIONS:
        try:
            made = action_from_fields("demo", kind, body, NOW_S * 1000)
        except ValueError:
            continue
        record = CODEC.expect(
            "ModerationAction", CODEC.encode("ModerationAction", made.to_record())
        )
        assert ModerationAction.from_record(record) == made
        state = ModerationState()
        state.apply(made)
        _writable(made.to_json())
        _writable(state.snapshot("demo", NOW_S * 1000))


# -- the origin's URL → key rules, Range, store keys, channel names --------------------------------


def origin(data: bytes) -> None:
    """byte 0: 0 request target, 1 Range header (bytes 1-4: the object's size), 2 store key,
    3 channel name; the rest: the text."""
    if not data:
        return
    mode = data[0] % 4
    if mode == 0:
        raw = bytes(b for b in data[1:] if 0x21 <= b <= 0x7E)  # what HTTP allows in a target
        found = route_target(raw)
        if found is not None and found[1] is not None:
            assert b"%" not in raw
            assert_in_layout(found[1], raw)
    elif mode == 1:
        size = int.from_bytes(data[1:5], "big")
        header = data[5:].decode("latin-1")  # how ASGI servers decode header values
        etag_matches(header, '"abc"')
        try:
            span = parse_range(header, size)
        except RangeNotSatisfiable:
            assert header.strip().lower().startswith("bytes=")
            return
        if span is not None:
            assert 0 <= span[0] <= span[1] < size
    else:
        text = data[1:].decode("utf-8", errors="replace")
        if mode == 2:
            try:
                key = check_key(text)
            except StoreError:
                return
            assert key.isascii() and not key.startswith("/")
            assert all(part not in ("", ".", "..") for part in key.split("/"))
        else:
            try:
                name = check_channel_name(text)
            except InvalidChannelName:
                return
            stream_id = new_stream_id(name, NOW_S * 1000)
            assert STREAM_ID.fullmatch(stream_id)
            check_key(keys.segment_key(stream_id, "720p30", 1))
            check_key(keys.live_master_key(name))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "rtmp": rtmp,
    "amf0": amf0_values,
    "flv": flv,
    "avro": avro,
    "tokens": tokens,
    "json_body": json_body,
    "origin": origin,
}
# libFuzzer's -max_len per target: the RTMP seeds are captures of a few KiB
MAX_LEN = {"rtmp": 16384, "flv": 8192}
