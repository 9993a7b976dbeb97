"""Chat fan-out: N viewers of one channel over two chat server processes, M messages/s in.

    python -m bench.chat [--viewers 500,1000,2000,3000] [--rate 50] [--seconds 20] [--repeat 2]

For each N, two runs with two `tests/integration/chat_server.py` processes on loopback:

- kafka: the real path. Senders (users at 0.5 msg/s each, within the default 1/s limit)
  are spread over both servers; every message goes through `onair.chat` and reaches the
  viewers on both servers through each server's partition follower.
- local: the reference without Kafka (`fanout="local"`): each server broadcasts in-process
  only, so every message is sent to both servers (one connection per server per sender) and
  each viewer gets it once from its own server.

Viewers are lean WebSocket clients in this process (a few µs per frame). Each message carries
its send time; a viewer records send→receive latency for every message it gets, and a bitmap
per viewer counts losses and duplicates. CPU is read from /proc for both servers, this client
process and (if it can be found) the Kafka broker, from the first send until the last
delivery. With uvloop
importable, the viewers and (through uvicorn) the servers run on it.

Columns: delivered/s = messages delivered to viewers per second (ideal N x M); p50/p99/max =
send→receive; lost/dup = per viewer, summed; dropd = messages dropped by slow-viewer
outboxes; close = viewers disconnected; srv cpu = each server's share of one core; kafka = the
broker's (shared with anything else using it); us/dlv = both servers' CPU µs per delivered
message (the load-independent cost); fan99ms = p99 from the server accepting a message to
the viewer; load = the machine's 1-minute load average at the end (other work on a shared
machine shows here). With --repeat, the best p99 per N and mode is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pipeline.tokens import issue_token
from tests.integration.chat_server import spawn

try:
    from bench.machine import describe
except ImportError:  # pragma: no cover - bench/machine.py is another helper's

    def describe() -> str:
        return f"{os.cpu_count()} cores"


logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
GOAL_P99_MS = 250.0
SENDER_RATE_PER_S = 0.5  # each sender stays well inside the default limit (1/s, burst 3)
MAX_LATENCY_MS = 60_000
TEXT_RE = re.compile(rb'"text":"(\d+) (\d+)","ts":(\d+)')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# A lean WebSocket client (RFC 6455, text frames, no extensions)


@dataclass(slots=True)
class Totals:
    """Shared by every viewer of a run."""

    planned: int
    histogram: list[int] = field(default_factory=lambda: [0] * (MAX_LATENCY_MS + 1))
    fanout_histogram: list[int] = field(default_factory=lambda: [0] * (MAX_LATENCY_MS + 1))
    delivered: int = 0
    duplicates: int = 0
    dropped_notices: int = 0
    dropped_messages: int = 0
    closed: int = 0
    close_codes: dict[int, int] = field(default_factory=dict)


class WsClient(asyncio.Protocol):
    def __init__(self, host: str, path: str, totals: Totals, record: bool) -> None:
        self.host = host
        self.path = path
        self.totals = totals
        self.record = record  # viewers record deliveries; senders only read acks
        self.seen = bytearray(totals.planned) if record else bytearray()
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[None] = loop.create_future()
        self.replies: dict[str, asyncio.Future[dict[str, object]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(f"lost before welcome: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.upgraded and not self.buffer:  # the usual case: whole frames, nothing pending
            used = self.frames(data)
            if used < len(data):
                self.buffer += data[used:]
            return
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                status = bytes(buffer[: buffer.find(b"\r\n")])
                if not self.welcome.done():
                    self.welcome.set_exception(ConnectionError(status.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
        del buffer[: self.frames(bytes(buffer))]

    def frames(self, data: bytes) -> int:
        """Handle the complete frames at the start of `data`; → bytes used."""
        pos, size = 0, len(data)
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            opcode = data[pos] & 0x0F
            payload = data[pos + head : pos + head + length]
            pos += head + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                self.send_frame(0xA, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.totals.closed += 1
                self.totals.close_codes[code] = self.totals.close_codes.get(code, 0) + 1
                assert self.transport is not None
                self.transport.close()
        return pos

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(b'{"type":"batch"'):
            if not self.record:
                return
            now_ns = time.time_ns()
            now_ms = now_ns // 1_000_000
            totals, seen = self.totals, self.seen
            histogram, fanout = totals.histogram, totals.fanout_histogram
            for seq, sent_ns, accepted_ms in TEXT_RE.findall(payload):
                k = int(seq)
                if k < len(seen):
                    if seen[k]:
                        totals.duplicates += 1
                        continue
                    seen[k] = 1
                totals.delivered += 1
                latency_ms = (now_ns - int(sent_ns)) // 1_000_000
                histogram[min(max(latency_ms, 0), MAX_LATENCY_MS)] += 1
                fanout[min(max(now_ms - int(accepted_ms), 0), MAX_LATENCY_MS)] += 1
            return
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "welcome" and not self.welcome.done():
            self.welcome.set_result(None)
        elif kind == "notice" and frame.get("code") == "messages_dropped":
            self.totals.dropped_notices += 1
            self.totals.dropped_messages += int(frame.get("count", 0))
        nonce = frame.get("nonce")
        if nonce is not None:
            future = self.replies.pop(nonce, None)
            if future is not None and not future.done():
                future.set_result(frame)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "big") if length else 0
        body = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
        self.transport.write(head + mask + body)

    def request(self, frame: dict[str, object]) -> asyncio.Future[dict[str, object]]:
        nonce = uuid.uuid4().hex[:10]
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.replies[nonce] = future
        self.send_frame(1, json.dumps({**frame, "nonce": nonce}).encode())
        return future

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send_frame(8, struct.pack("!H", 1000))
            self.transport.close()


async def open_client(
    port: int, channel: str, totals: Totals, record: bool, timeout_s: float = 30.0
) -> WsClient:
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{port}"
    _transport, client = await loop.create_connection(
        lambda: WsClient(host, f"/chat/{channel}", totals, record), "127.0.0.1", port
    )
    await asyncio.wait_for(client.welcome, timeout_s)
    return client


# ---------------------------------------------------------------------------------------------
# Processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc; NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def broker_pid(port: int = 9092) -> int | None:
    """The process listening on the Kafka port, if /proc lets us see it (read-only)."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    except OSError:
        return None
    found = re.search(r"pid=(\d+)", out.stdout)
    return int(found.group(1)) if found else None


@dataclass
class Server:
    mode: str
    bootstrap: str
    log_dir: Path
    token_secret: str
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn(
            self.port,
            self.bootstrap,
            self.token_secret,
            secrets.token_urlsafe(12),
            self.log_dir / f"{self.mode}-{self.port}.log",
            f"--fanout={self.mode}",
            "--log-level=warning",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------------------------------
# One run


@dataclass(slots=True)
class Run:
    mode: str
    viewers: int
    rate: float
    seconds: float
    sent: int
    acked: int
    delivered: int
    expected: int
    duplicates: int
    dropped: int
    closed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    fanout_p99_ms: float  # from the server accepting the message to the viewer
    load_avg: float
    server_cpu: list[float]
    client_cpu: float
    broker_cpu: float | None
    refused: dict[str, int]
    elapsed_s: float  # sending window + the time the last deliveries took

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.seconds

    @property
    def server_us_per_delivery(self) -> float:
        """Both servers' CPU per message delivered to one viewer: load-independent cost."""
        return sum(self.server_cpu) * self.elapsed_s * 1e6 / max(self.delivered, 1)

    @property
    def goal_met(self) -> bool:
        return self.p99_ms < GOAL_P99_MS and self.lost == 0 and self.acked == self.sent


def percentile(histogram: list[int], fraction: float) -> float:
    total = sum(histogram)
    if total == 0:
        return float("nan")
    rank = fraction * total
    running = 0
    for ms, count in enumerate(histogram):
        running += count
        if running >= rank:
            return float(ms)
    return float(MAX_LATENCY_MS)


async def run_once(
    mode: str,
    viewers: int,
    rate: float,
    seconds: float,
    bootstrap: str,
    log_dir: Path,
) -> Run:
    secret = secrets.token_urlsafe(16)
    servers = [Server(mode, bootstrap, log_dir, secret) for _ in range(2)]
    channel = f"bench-{uuid.uuid4().hex[:10]}"
    planned = int(rate * seconds)
    totals = Totals(planned)
    clients: list[WsClient] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
        ports = [s.port for s in servers]
        gate = asyncio.Semaphore(100)

        async def viewer(i: int) -> WsClient:
            async with gate:
                return await open_client(ports[i % 2], channel, totals, record=True)

        clients = list(await asyncio.gather(*(viewer(i) for i in range(viewers))))
        sender_count = max(1, int(rate / SENDER_RATE_PER_S + 0.999))
        senders: list[list[WsClient]] = []  # per user: its connection(s)
        for i in range(sender_count):
            targets = ports if mode == "local" else [ports[i % 2]]
            conns = [await open_client(p, channel, totals, record=False) for p in targets]
            token = issue_token(secret, f"bench_{i}")
            for conn in conns:
                reply = await asyncio.wait_for(conn.request({"type": "auth", "token": token}), 10)
                assert reply["type"] == "authed", reply
            senders.append(conns)
        clients.extend(c for conns in senders for c in conns)
        await asyncio.sleep(1.0)

        pids = [s.proc.pid for s in servers if s.proc is not None]
        broker = broker_pid() if mode == "kafka" else None
        cpu_before = [cpu_seconds(p) for p in pids]
        client_before = time.process_time()
        broker_before = cpu_seconds(broker) if broker else 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        acks: list[asyncio.Future[dict[str, object]]] = []
        for k in range(planned):
            delay = start + k / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"{k} {time.time_ns()}"
            for conn in senders[k % sender_count]:
                acks.append(conn.request({"type": "send", "text": text}))
        window = loop.time() - start
        replies = await asyncio.gather(*(asyncio.wait_for(a, 30) for a in acks))
        refused: dict[str, int] = {}
        for reply in replies:
            if reply["type"] != "ack":
                code = str(reply.get("code"))
                refused[code] = refused.get(code, 0) + 1
        per_message = len(senders[0])
        acked = (len(replies) - sum(refused.values())) // per_message
        expected = acked * viewers
        for _ in range(200):  # up to 10 s for the last deliveries
            if totals.delivered >= expected:
                break
            await asyncio.sleep(0.05)
        # CPU counts until the work of the window is done (a starved server finishes late)
        elapsed = loop.time() - start
        cpu_after = [cpu_seconds(p) for p in pids]
        client_after = time.process_time()
        broker_after = cpu_seconds(broker) if broker else 0.0
        return Run(
            mode=mode,
            viewers=viewers,
            rate=rate,
            seconds=window,
            sent=planned,
            acked=acked,
            delivered=totals.delivered,
            expected=expected,
            duplicates=totals.duplicates,
            dropped=totals.dropped_messages,
            closed=totals.closed,
            p50_ms=percentile(totals.histogram, 0.50),
            p99_ms=percentile(totals.histogram, 0.99),
            max_ms=percentile(totals.histogram, 1.0),
            fanout_p99_ms=percentile(totals.fanout_histogram, 0.99),
            load_avg=os.getloadavg()[0],
            server_cpu=[(b - a) / elapsed for a, b in zip(cpu_before, cpu_after, strict=True)],
            client_cpu=(client_after - client_before) / elapsed,
            broker_cpu=(broker_after - broker_before) / elapsed if broker else None,
            elapsed_s=elapsed,
            refused=refused,
        )
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0.2)
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


# ---------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def print_run(run: Run) -> None:
    servers = "+".join(_pct(c) for c in run.server_cpu)
    broker = _pct(run.broker_cpu) if run.broker_cpu is not None else "-"
    extra = f" refused={run.refused}" if run.refused else ""
    print(
        f"{run.mode:6} {run.viewers:6d} {run.rate:6.0f} {run.delivered_per_s:10.0f} "
        f"{run.p50_ms:7.0f} {run.p99_ms:7.0f} {run.max_ms:7.0f} {run.lost:6d} "
        f"{run.duplicates:5d} {run.dropped:6d} {run.closed:5d}   {servers:>9} {broker:>6} "
        f"{_pct(run.client_cpu):>6} {run.server_us_per_delivery:6.1f} {run.fanout_p99_ms:7.0f} "
        f"{run.load_avg:5.1f}   "
        f"{'yes' if run.goal_met else 'NO'}{extra}",
        flush=True,
    )


HEADER = (
    "mode   viewers msgs/s delivered/s  p50ms   p99ms   maxms   lost   dup  dropd close"
    "  srv cpu   kafka client us/dlv fan99ms  load   goal"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="500,1000,2000,3000", help="comma-separated N")
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s sent")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", default="kafka,local")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per N and mode; the best p99 is compared"
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep server logs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    loop_name = "asyncio"
    try:  # the viewers' loop; uvicorn picks uvloop for the servers on its own when present
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        pass
    sizes = [int(n) for n in args.viewers.split(",")]
    modes = args.modes.split(",")
    from topics.admin import ensure_topics
    from topics.specs import all_topics

    if "kafka" in modes:
        ensure_topics(args.bootstrap, all_topics())
    print(
        f"bench.chat: {args.rate:.0f} msgs/s for {args.seconds:.0f} s per run, 2 servers, "
        f"event loop: {loop_name}"
    )
    print(f"machine: {describe()}")
    print(HEADER)
    runs: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            for _ in range(args.repeat):
                for mode in modes:
                    run = asyncio.run(
                        run_once(mode, n, args.rate, args.seconds, args.bootstrap, log_dir)
                    )
                    print_run(run)
                    best = runs.get((mode, n))
                    if best is None or (run.lost, run.p99_ms) < (best.lost, best.p99_ms):
                        runs[(mode, n)] = run
    if {"kafka", "local"} <= set(modes):
        print("\nkafka / local (the cost of the Kafka hop; best run of each):")
        for n in sizes:
            k, r = runs[("kafka", n)], runs[("local", n)]
            cpu_k, cpu_r = sum(k.server_cpu), sum(r.server_cpu)
            print(
                f"  N={n:5d}: p50 {k.p50_ms / max(r.p50_ms, 1):.2f}x  "
                f"p99 {k.p99_ms / max(r.p99_ms, 1):.2f}x  "
                f"server CPU {cpu_k / max(cpu_r, 1e-9):.2f}x "
                f"(+broker {_pct(k.broker_cpu or 0.0)}); server CPU per delivery "
                f"{k.server_us_per_delivery:.1f} vs {r.server_us_per_delivery:.1f} us"
            )
    met = [n for n in sizes if runs.get(("kafka", n)) and runs[("kafka", n)].goal_met]
    broke = [n for n in sizes if runs.get(("kafka", n)) and not runs[("kafka", n)].goal_met]
    print(f"\ngoal p99 < {GOAL_P99_MS:.0f} ms, nothing lost (kafka): met at N={met or '-'}, ")
    print(f"missed at N={broke or '-'}")
    print(f"machine: {describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
