"""Soak: one live stream and 200 chat viewers for a long time; does any role grow?

    python -m bench.soak [--minutes 10] [--viewers 200] [--rate 1]

Needs the services (`make services`); the issue's figure is `--minutes 30`. Every role runs
as its own process on the real Kafka and S3 (the e2e harness): ingest, the packager, the VOD
worker, the HTTP origin (which also serves chat) and one transcode worker per rung of a 720p30
source. Real ffmpeg publishes 720p30 with a tone in real time for the whole run; `--viewers`
WebSocket clients watch the channel's chat and `--rate` messages a second are sent by
authenticated users (0.5 msg/s each, inside the rate limit); a viewer polls the 360p30
playlist every 2 s.

Every minute: the resident set (VmRSS) of every role process and each consumer group's lag
(the sum over its partitions of the log end minus the committed offset). Printed as a table,
then per role the least-squares slope of RSS from minute 5 on and its growth between minute 5
and the end. Goal (issue): flat — no role grows by more than 5 % after the first 5 min — and no
lag growth. Chat: messages acked, delivered to every viewer exactly once (lost and duplicates
are counted per viewer).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.chat import Totals, WsClient, open_client
from bench.faults import ROLE_GROUPS, ROLES, start_role
from bench.machine import describe
from pipeline.tokens import issue_token
from tests.harness import Platform, parse_media_playlist, wait_port
from topics.admin import group_lag

SENDER_RATE_PER_S = 0.5
FLAT_AFTER_MIN = 5
GOAL_GROWTH = 0.05


def rss_mb(pid: int) -> float:
    """VmRSS of a process (MiB); NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def group_lags(bootstrap: str, groups: dict[str, tuple[str, str]]) -> dict[str, int]:
    """role → its group's lag summed over the partitions (as `onair status` shows it)."""
    return {
        role: sum(p.lag for p in group_lag(bootstrap, group, topic))
        for role, (group, topic) in groups.items()
    }


def slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / den if den else 0.0


async def soak(platform: Platform, key: str, channel: str, args: argparse.Namespace) -> int:
    bootstrap = platform.env.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
    groups = {
        role: (f"{platform.group_prefix}.{group}", topic)
        for role, (group, topic) in ROLE_GROUPS.items()
    }
    seconds = args.minutes * 60
    planned = int(args.rate * seconds) + 10
    totals = Totals(planned)
    clients: list[WsClient] = []
    publisher = platform.publish(key, seconds + 30)
    gate = asyncio.Semaphore(50)

    async def viewer() -> WsClient:
        async with gate:
            return await open_client(platform.http_port, channel, totals, record=True)

    clients = list(await asyncio.gather(*(viewer() for _ in range(args.viewers))))
    senders: list[WsClient] = []
    for i in range(max(1, int(args.rate / SENDER_RATE_PER_S + 0.999))):
        conn = await open_client(platform.http_port, channel, totals, record=False)
        reply = await asyncio.wait_for(
            conn.request({"type": "auth", "token": issue_token(args.secret, f"soak_{i}")}), 10
        )
        assert reply["type"] == "authed", reply
        senders.append(conn)
    print(f"{len(clients)} chat viewers, {len(senders)} senders; {args.minutes} min", flush=True)

    samples: list[tuple[float, dict[str, float], dict[str, int]]] = []
    playlist_errors = 0
    acks: list[asyncio.Future[dict[str, object]]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_sample = start
    next_poll = start
    sent = 0
    header = "min  " + " ".join(f"{r[:14]:>14}" for r in ROLES)
    print("RSS (MiB) per role, each minute; lag per group after the slash")
    print(header, flush=True)
    while (now := loop.time()) - start < seconds:
        if now >= next_sample:
            minute = (now - start) / 60
            rss = {r: rss_mb(platform.procs[r].pid) for r in ROLES}
            lags = await asyncio.to_thread(group_lags, bootstrap, groups)
            samples.append((minute, rss, lags))
            cells = []
            for r in ROLES:
                lag = f"/{lags[r]}" if r in lags else ""
                cells.append(f"{rss[r]:.0f}{lag}".rjust(14))
            print(f"{minute:4.1f} " + " ".join(cells), flush=True)
            next_sample += 60
        if now >= next_poll:
            body = await asyncio.to_thread(
                platform.get_or_none, f"/live/{channel}/360p30/index.m3u8"
            )
            if body is None or not parse_media_playlist(body.decode())["segments"]:
                playlist_errors += 0 if now - start < 30 else 1
            next_poll += 2
        while sent < (now - start) * args.rate and sent < planned:
            conn = senders[sent % len(senders)]
            acks.append(conn.request({"type": "send", "text": f"{sent} {time.time_ns()}"}))
            sent += 1
        await asyncio.sleep(0.05)
    minute = (loop.time() - start) / 60
    rss = {r: rss_mb(platform.procs[r].pid) for r in ROLES}
    samples.append((minute, rss, await asyncio.to_thread(group_lags, bootstrap, groups)))
    replies = await asyncio.gather(*(asyncio.wait_for(a, 30) for a in acks), return_exceptions=True)
    acked = sum(1 for r in replies if isinstance(r, dict) and r["type"] == "ack")
    for _ in range(200):
        if totals.delivered >= acked * len(clients):
            break
        await asyncio.sleep(0.05)
    for client in clients + senders:
        client.close()
    publisher.kill()
    alive = {r: platform.procs[r].poll() is None for r in ROLES}
    return report(samples, alive, sent, acked, len(clients), totals, playlist_errors)


def report(
    samples: list[tuple[float, dict[str, float], dict[str, int]]],
    alive: dict[str, bool],
    sent: int,
    acked: int,
    viewers: int,
    totals: Totals,
    playlist_errors: int,
) -> int:
    print()
    print(f"machine: {describe()}")
    print()
    print("| role | RSS at 5 min | RSS at end | growth | slope | lag at 5 min → end | alive |")
    print("|---|---|---|---|---|---|---|")
    flat = True
    for role in ROLES:
        later = [(m, s[role]) for m, s, _ in samples if m >= FLAT_AFTER_MIN - 0.05]
        if not later:
            later = [(m, s[role]) for m, s, _ in samples]
        first, last = later[0][1], later[-1][1]
        growth = (last - first) / first if first else float("nan")
        slope = slope_per_min(later)
        lag_cell = "—"
        lag_points = [lag[role] for m, _s, lag in samples if role in lag and m >= FLAT_AFTER_MIN]
        if lag_points:
            lag_cell = f"{lag_points[0]} → {lag_points[-1]}"
            flat &= lag_points[-1] <= max(lag_points[0], 10)
        flat &= growth <= GOAL_GROWTH and alive[role]
        print(
            f"| {role} | {first:.0f} MiB | {last:.0f} MiB | {growth * 100:+.1f} % | "
            f"{slope:+.2f} MiB/min | {lag_cell} | {'yes' if alive[role] else 'NO'} |"
        )
    expected = acked * viewers
    lost = expected - totals.delivered
    print()
    print(
        f"chat: {sent} sent, {acked} acked (the rest refused or unanswered), "
        f"{totals.delivered}/{expected} deliveries "
        f"({lost} lost, {totals.duplicates} duplicates, {totals.closed} viewers closed); "
        f"playlist misses after the first 30 s: {playlist_errors}"
    )
    chat_ok = sent > 0 and acked == sent and lost == 0 and totals.duplicates == 0
    ok = flat and chat_ok and playlist_errors == 0
    print(f"RESULT: {'flat' if ok else 'NOT FLAT or lossy'} (goal: ≤ +5 % after minute 5)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1.0, help="chat messages per second")
    args = parser.parse_args(argv)
    args.secret = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="onair-soak-") as tmp:
        platform = Platform(Path(tmp), ONAIR_TOKEN_SECRET=args.secret)
        try:
            platform.cli("topics")
            channel = f"soak_{uuid.uuid4().hex[:8]}"
            key = platform.create_channel(channel)["stream_key"]
            for role in ROLES:
                start_role(platform, role)
            wait_port(platform.rtmp_port)
            wait_port(platform.http_port)
            platform.wait_ready(*(group for group, _topic in ROLE_GROUPS.values()))
            return asyncio.run(soak(platform, key, channel, args))
        finally:
            platform.stop()


if __name__ == "__main__":
    sys.exit(main())
