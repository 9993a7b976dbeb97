"""Does one hostile RTMP client hurt an honest publisher on the same ingest?

    python -m bench.rtmp_flood [--attack c3,chunk1,amf,c3key] [--seconds 4] [--attackers 1]

One `RtmpServer` in this process (a recording handler, no Kafka). An honest publisher (a
thread with a blocking socket, so its clock does not depend on the server's event loop) sends
30 fps video of ~4 KiB frames plus 48 kHz AAC frames. For each attack, two runs side by side:

- reference: the honest publisher alone;
- attack: the same, while `--attackers` clients (threads) flood the server as fast as they can.

Attacks (all without a stream key unless said):

- `c3`: after the handshake, one fmt-0 header (csid 3, length 0, type 99), then `0xC3` bytes:
  every byte is a complete zero-length message;
- `chunk1`: Set Chunk Size 1, then 64 KiB messages one byte per chunk;
- `amf`: AMF0 data messages of 64 KiB (tiny values) before `connect`;
- `c3key`: the `c3` flood after a publish accepted with a valid key.

Columns: lag = lateness of a 5 ms timer on the server's loop (p99 / max); delay = honest
frame sent → handed to the publication (p50 / p99 / max); frames = honest video frames
delivered; atk MB = bytes the attackers got in; closed = attackers the server closed, and
after how long; perr / budget = the server's protocol error and budget counters. The last
column is the ratio of the honest p99 delay, attack / reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from gateway.rtmp import amf0
from gateway.rtmp.chunk import ChunkWriter, Message, MessageType
from gateway.rtmp.server import RtmpServer
from gateway.rtmp.types import Publication
from pipeline.media import CodecConfig, MediaUnit, Track

try:
    from bench.machine import describe
except ImportError:  # pragma: no cover

    def describe() -> str:
        return f"{os.cpu_count()} cores"


KEY = "bench-key"
AVCC = bytes.fromhex(
    "0142c01effe100196742c01eda0280bfe5c044000003000400000300f03c58ba8001000468ce0fc8"
)
ASC = bytes.fromhex("118856e500")
FRAME_BYTES = 4096
HANDSHAKE = b"\x03" + bytes(1536) + bytes(1536)


def _nal_tag(keyframe: bool, size: int) -> bytes:
    nal = (b"\x65\x88\x84\x00" if keyframe else b"\x41\x9a\x20\x00") + bytes(size - 4)
    return bytes([0x17 if keyframe else 0x27, 1, 0, 0, 0]) + len(nal).to_bytes(4, "big") + nal


class _Recorder:
    def __init__(self, arrivals: dict[int, float]) -> None:
        self.arrivals = arrivals

    async def on_config(self, config: CodecConfig) -> None:
        pass

    async def on_media(self, unit: MediaUnit) -> None:
        if unit.track is Track.VIDEO:
            self.arrivals.setdefault(unit.dts_90k // 90, time.monotonic())

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        pass

    async def close(self, reason: str) -> None:
        pass


class _Handler:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}

    async def start_publish(self, app: str, stream_key: str, peer: str) -> Publication:
        if stream_key != KEY:
            from pipeline.errors import AuthError

            raise AuthError("Invalid stream key.")
        return _Recorder(self.arrivals)


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def honest_publisher(port: int, seconds: float, sent: dict[int, float]) -> None:
    writer = ChunkWriter(4096)
    sock = socket.create_connection(("127.0.0.1", port))
    stop = threading.Event()
    reader = threading.Thread(target=_drain, args=(sock, stop), daemon=True)
    reader.start()
    try:
        scs = Message(MessageType.SET_CHUNK_SIZE, 0, 0, (4096).to_bytes(4, "big"), 2)
        hello = ChunkWriter().write(scs)
        cmd = [
            amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"}),
            amf0.encode("createStream", 2.0, None),
            amf0.encode("publish", 0.0, None, KEY, "live"),
        ]
        for i, payload in enumerate(cmd):
            hello += writer.write(Message(MessageType.COMMAND_AMF0, 1 if i == 2 else 0, 0, payload))
        sock.sendall(HANDSHAKE + hello)
        time.sleep(0.2)  # the publish decision
        meta = amf0.encode("@setDataFrame", "onMetaData", {"framerate": 30.0})
        sock.sendall(
            writer.write(Message(MessageType.DATA_AMF0, 1, 0, meta, 4))
            + writer.write(Message(MessageType.VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC, 6))
            + writer.write(Message(MessageType.AUDIO, 1, 0, b"\xaf\x00" + ASC, 4))
        )
        start = time.monotonic()
        frame = 0
        audio_ms = 0.0
        while (now := time.monotonic()) - start < seconds:
            ts = frame * 1000 // 30
            tag = _nal_tag(frame % 60 == 0, FRAME_BYTES)
            out = writer.write(Message(MessageType.VIDEO, 1, ts, tag, 6))
            while audio_ms <= ts:
                out += writer.write(
                    Message(MessageType.AUDIO, 1, int(audio_ms), b"\xaf\x01" + bytes(180), 4)
                )
                audio_ms += 1024 / 48
            sent[ts] = time.monotonic()
            sock.sendall(out)
            frame += 1
            time.sleep(max(0.0, start + frame / 30 - now - (time.monotonic() - now)))
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            sock.close()


def attack_bytes(kind: str) -> tuple[bytes, bytes]:
    """(what the attacker sends once after the handshake, what it then repeats)."""
    w = ChunkWriter()
    if kind in ("c3", "c3key"):
        head = b"\x03" + bytes(3) + bytes(3) + bytes([99]) + bytes(4)
        if kind == "c3key":
            publish = amf0.encode("publish", 0.0, None, KEY, "live")
            head = (
                w.write(
                    Message(
                        MessageType.COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})
                    )
                )
                + w.write(Message(MessageType.COMMAND_AMF0, 1, 0, publish))
                + b"\x08"
                + bytes(3)
                + bytes(3)
                + bytes([99])
                + bytes(4)
            )
        return head, b"\xc8" * 65536 if kind == "c3key" else b"\xc3" * 65536
    if kind == "chunk1":
        head = w.write(Message(MessageType.SET_CHUNK_SIZE, 0, 0, (1).to_bytes(4, "big"), 2))
        w.chunk_size = 1
        return head, w.write(Message(MessageType.VIDEO, 1, 0, bytes(65536), 6))
    if kind == "amf":
        values = [1.0] * 7000  # ~64 KiB of AMF0 numbers
        payload = amf0.encode("@setDataFrame", *values)  # type: ignore[arg-type]
        return b"", w.write(Message(MessageType.DATA_AMF0, 0, 0, payload, 4))
    raise ValueError(kind)


@dataclass
class AttackResult:
    bytes_sent: int = 0
    closed_after_s: float | None = None


def attacker(port: int, kind: str, seconds: float, result: AttackResult) -> None:
    head, body = attack_bytes(kind)
    start = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port))
    except OSError:
        return
    sock.settimeout(seconds)
    try:
        sock.sendall(HANDSHAKE + head)
        result.bytes_sent += len(HANDSHAKE) + len(head)
        if kind == "c3key":
            time.sleep(0.3)  # the publish is accepted
        while time.monotonic() - start < seconds:
            sock.sendall(body)
            result.bytes_sent += len(body)
    except OSError:
        result.closed_after_s = time.monotonic() - start
    finally:
        with contextlib.suppress(OSError):
            sock.close()


@dataclass
class RunResult:
    lags: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    frames: int = 0
    attacks: list[AttackResult] = field(default_factory=list)
    protocol_errors: int = 0
    budget: int = 0


async def run(kind: str | None, seconds: float, attackers: int) -> RunResult:
    handler = _Handler()
    result = RunResult()
    async with RtmpServer("127.0.0.1", 0, handler, handshake_timeout_s=seconds + 5) as server:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = loop.time()
                await asyncio.sleep(0.005)
                result.lags.append(loop.time() - t - 0.005)

        tick = asyncio.create_task(ticker())
        sent: dict[int, float] = {}
        threads = [threading.Thread(target=honest_publisher, args=(server.port, seconds, sent))]
        if kind is not None:
            for _ in range(attackers):
                attack = AttackResult()
                result.attacks.append(attack)
                threads.append(
                    threading.Thread(target=attacker, args=(server.port, kind, seconds, attack))
                )
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.5)
        done.set()
        await tick
        arrivals = handler.arrivals
        result.delays = [arrivals[ts] - at for ts, at in sent.items() if ts in arrivals]
        result.frames = len(result.delays)
        result.protocol_errors = server.counts.protocol_errors_total
        result.budget = getattr(server.counts, "budget_exceeded_total", 0)
    return result


def _ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attack", default="c3,chunk1,amf,c3key")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--attackers", type=int, default=1)
    args = parser.parse_args()
    print(describe())
    print(
        f"{'attack':9} {'lag p99/max ms':>16} {'delay p50/p99/max ms':>22} {'frames':>6} "
        f"{'atk MB':>7} {'closed':>12} {'perr':>5} {'budget':>6} {'p99 ratio':>9}"
    )
    for kind in args.attack.split(","):
        ref = asyncio.run(run(None, args.seconds, 0))
        hit = asyncio.run(run(kind, args.seconds, args.attackers))
        for name, r in (("(alone)", ref), (kind, hit)):
            closed = [a.closed_after_s for a in r.attacks if a.closed_after_s is not None]
            closed_text = f"{len(closed)}/{len(r.attacks)}"
            if closed:
                closed_text += f" {max(closed):.2f}s"
            ratio = _ms(r.delays, 0.99) / max(_ms(ref.delays, 0.99), 1e-3)
            print(
                f"{name:9} {_ms(r.lags, 0.99):7.1f}/{_ms(r.lags, 1.0):7.1f} "
                f"{_ms(r.delays, 0.5):6.1f}/{_ms(r.delays, 0.99):7.1f}/{_ms(r.delays, 1.0):7.1f} "
                f"{r.frames:6d} {sum(a.bytes_sent for a in r.attacks) / 1e6:7.2f} "
                f"{closed_text:>12} {r.protocol_errors:5d} {r.budget:6d} "
                f"{ratio if r is hit else 1.0:9.1f}"
            )


if __name__ == "__main__":
    main()
