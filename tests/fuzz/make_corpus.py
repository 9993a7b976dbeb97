"""Write the committed seed corpora in `tests/fuzz/corpus/<target>/` from real captures.

    PYTHONPATH=. python tests/fuzz/make_corpus.py

Two publishes are captured as they arrive at a tiny server driving onair's own `RtmpSession`:
ffmpeg pushing an FLV test pattern with its defaults, and ffmpeg set up the way OBS streams
(x264 `veryfast` + `zerolatency`, high profile, CBR, 2 s keyframe interval, AAC 48 kHz stereo,
160 kbps). Each capture is split where the protocol changes phase (the handshake, the command
phase up to `publish`, the media messages) and the messages are taken apart into the inputs
of the other targets (AMF0 payloads, FLV tag bodies, the avcC, SPS and AudioSpecificConfig).
Seeds are cut to a few KiB (`MAX_SEED_BYTES`); the small resolution keeps whole frames in.
The other targets' seeds are the documented shapes of their inputs (API bodies, URLs, Range
headers, tokens, one encoded sample of every Avro schema).

Each seed starts with the target's mode byte(s) (see `targets.py`). Files named
`regression-*` are crash inputs atheris found (kept once fixed) and are left alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from gateway.rtmp.chunk import ChunkReader, Message, MessageType
from gateway.rtmp.handshake import PACKET_SIZE
from gateway.rtmp.session import PublishRequested, RtmpSession
from schemas.codec import Codec
from tests.fuzz.targets import FINGERPRINTS, ISSUED, SLICES
from tests.unit.test_codec import SAMPLES

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_SEED_BYTES = 6 * 1024
HANDSHAKE_BYTES = 1 + 2 * PACKET_SIZE
SLICE_4096 = SLICES.index(4096)
SLICE_1 = SLICES.index(1)

FFMPEG_TEST_PATTERN = ("-c:v", "libx264", "-c:a", "aac")
OBS_LIKE = (
    *("-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "high"),
    *("-pix_fmt", "yuv420p", "-b:v", "300k", "-maxrate", "300k", "-bufsize", "300k"),
    *("-g", "60", "-keyint_min", "60", "-sc_threshold", "0"),
    *("-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "160k"),
)


def capture(codec_args: tuple[str, ...], size: str = "160x90", seconds: float = 1.0) -> bytes:
    """What ffmpeg sends publishing a test pattern to a one-shot server on a free port."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("make_corpus: ffmpeg is not installed")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        session = RtmpSession()
        with conn:
            conn.settimeout(20)
            while chunk := conn.recv(65536):
                received.extend(chunk)
                out, events = session.feed(chunk)
                if any(isinstance(e, PublishRequested) for e in events):
                    out += session.accept_publish()[0]
                conn.sendall(out)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        *codec_args, "-t", str(seconds), "-f", "flv", f"rtmp://127.0.0.1:{port}/live/seed-key",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)
        thread.join(timeout=10)
    finally:
        listener.close()
    return bytes(received)


def command_phase_end(data: bytes) -> int:
    """The offset just after the message that asked to publish."""
    session = RtmpSession()
    session.feed(data[:HANDSHAKE_BYTES])
    for end in range(HANDSHAKE_BYTES + 1, len(data) + 1):
        _, events = session.feed(data[end - 1 : end])
        if any(isinstance(e, PublishRequested) for e in events):
            return end
    raise SystemExit("make_corpus: the capture never asked to publish")


def messages(stream: bytes) -> list[Message]:
    return ChunkReader().feed(stream)


def _tlv(video: bool, timestamp_ms: int, body: bytes) -> bytes:
    return (
        bytes([1 if video else 0])
        + timestamp_ms.to_bytes(4, "big")
        + (len(body).to_bytes(2, "big") + body)
    )


def capture_seeds(name: str, data: bytes) -> dict[str, dict[str, bytes]]:
    end = command_phase_end(data)
    handshake, commands, media = data[:HANDSHAKE_BYTES], data[HANDSHAKE_BYTES:end], data[end:]
    rtmp = {
        f"{name}-handshake-and-commands": bytes([1, SLICE_4096]) + handshake + commands,
        f"{name}-commands": bytes([2, SLICE_4096]) + commands,
        f"{name}-commands-byte-by-byte": bytes([2, SLICE_1]) + commands,
        f"{name}-publish-and-media": bytes([2, SLICE_4096]) + commands + media,
        f"{name}-chunks": bytes([0, SLICE_4096]) + commands + media,
    }
    found = messages(commands + media)
    amf = {}
    for i, m in enumerate(found):
        if m.type_id in (MessageType.COMMAND_AMF0, MessageType.DATA_AMF0):
            amf[f"{name}-message-{i}-type-{m.type_id}"] = m.payload
    video = [m for m in found if m.type_id == MessageType.VIDEO]
    audio = [m for m in found if m.type_id == MessageType.AUDIO]
    avc_header, aac_header = video[0].payload, audio[0].payload
    assert avc_header[:2] == b"\x17\x00" and aac_header[1] == 0, "sequence headers first"
    record = avc_header[5:]
    sps = record[8 : 8 + int.from_bytes(record[6:8], "big")]
    frames = sorted((m for m in video if m.payload[1] == 1), key=lambda m: len(m.payload))
    flv = {
        f"{name}-avc-sequence-header": b"\x00" + avc_header,
        f"{name}-keyframe": b"\x00" + video[1].payload,
        f"{name}-inter-frame": b"\x00" + frames[0].payload,
        f"{name}-end-of-sequence": b"\x00" + video[-1].payload,
        f"{name}-aac-sequence-header": b"\x01" + aac_header,
        f"{name}-aac-frame": b"\x01" + audio[1].payload,
        f"{name}-avcc": b"\x02" + record,
        f"{name}-sps": b"\x03" + sps,
        f"{name}-audio-specific-config": b"\x04" + aac_header[2:],
        f"{name}-to-media": b"\x05"
        + b"".join(_tlv(m.type_id == MessageType.VIDEO, m.timestamp, m.payload) for m in found),
    }
    return {"rtmp": rtmp, "amf0": amf, "flv": flv}


def avro_seeds() -> dict[str, bytes]:
    codec = Codec()
    seeds = {}
    for name, sample in SAMPLES.items():
        message = codec.encode(name, sample)
        selector = FINGERPRINTS.index(message[2:10])
        seeds[f"{name}-body"] = bytes([selector]) + message[10:]
        seeds[f"{name}-message"] = b"\xff" + message
    return seeds


def token_seeds() -> dict[str, bytes]:
    seeds = {f"issued-{i}": token.encode() for i, token in enumerate(sorted(ISSUED))}
    seeds["utf-8-mode"] = b"\xff" + sorted(ISSUED)[0].encode()
    return seeds


BODIES = {
    "channel-create": {"name": "demo"},
    "channel-update": {"title": "Speedrun \u2014 any%", "category": "games"},
    "ban": {"user": "mallory", "reason": "spam", "moderator": "mod"},
    "timeout": {"user": "mallory", "seconds": 600, "reason": "calm down"},
    "unban": {"user": "mallory"},
    "delete": {"message_id": "q8Pz3xY1c2Vb7nKa"},
    "slow": {"seconds": 10},
    "user-token": {"user": "alice", "ttl_s": 86400},
    "chat-auth": {"type": "auth", "token": "ot1.e30.e30", "nonce": "a1"},
    "chat-send": {"type": "send", "text": "hello chat \U0001f44b", "nonce": "c42"},
    "chat-ping": {"type": "ping", "nonce": "p1"},
}


def json_seeds() -> dict[str, bytes]:
    seeds = {name: json.dumps(body, ensure_ascii=False).encode() for name, body in BODIES.items()}
    seeds["escaped-surrogate-pair"] = b'{"text": "\\ud83d\\ude00", "nested": [{"a": [1, 2.5]}]}'
    return seeds


ORIGIN_TARGETS = [
    "/live/demo/master.m3u8",
    "/live/demo/720p30/index.m3u8",
    "/live/demo/720p30/demo-20261126T043000Z-9f2c/000042.ts",
    "/vod/demo-20261126T043000Z-9f2c/master.m3u8",
    "/vod/demo-20261126T043000Z-9f2c/720p30/index.m3u8",
    "/vod/demo-20261126T043000Z-9f2c/720p30/000001.ts",
    "/vod/demo-20261126T043000Z-9f2c/720p30.mp4",
    "/vod/demo-20261126T043000Z-9f2c/%2e%2e/master.m3u8",
]
RANGES = [(1000, "bytes=0-99"), (1000, "bytes=-100"), (1000, "bytes=500-"), (0, "bytes=0-")]


def origin_seeds() -> dict[str, bytes]:
    seeds = {f"target-{i}": b"\x00" + t.encode() for i, t in enumerate(ORIGIN_TARGETS)}
    for i, (size, header) in enumerate(RANGES):
        seeds[f"range-{i}"] = b"\x01" + size.to_bytes(4, "big") + header.encode()
    seeds["key"] = b"\x02streams/demo-1/720p30/000001.ts"
    seeds["channel"] = b"\x03demo_2"
    return seeds


def write(target: str, seeds: dict[str, bytes]) -> tuple[int, int]:
    """Replace the target's corpus with `seeds` (cut, duplicates dropped): (files, bytes)."""
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if not old.name.startswith("regression-"):  # crash inputs found by fuzzing stay
            old.unlink()
    seen = set()
    for name, seed in sorted(seeds.items()):
        seed = seed[:MAX_SEED_BYTES]
        digest = hashlib.sha1(seed).digest()
        if digest not in seen:
            seen.add(digest)
            (directory / name).write_bytes(seed)
    files = list(directory.iterdir())
    return len(files), sum(f.stat().st_size for f in files)


def merge(parts: Iterable[dict[str, dict[str, bytes]]]) -> dict[str, dict[str, bytes]]:
    merged: dict[str, dict[str, bytes]] = {}
    for part in parts:
        for target, seeds in part.items():
            merged.setdefault(target, {}).update(seeds)
    return merged


def main() -> None:
    captured = merge(
        [
            capture_seeds("ffmpeg", capture(FFMPEG_TEST_PATTERN)),
            capture_seeds("obs-like", capture(OBS_LIKE)),
        ]
    )
    captured.update(
        avro=avro_seeds(), tokens=token_seeds(), json_body=json_seeds(), origin=origin_seeds()
    )
    for target, seeds in sorted(captured.items()):
        files, size = write(target, seeds)
        print(f"{target}: {files} seeds, {size} bytes")


if __name__ == "__main__":
    main()
