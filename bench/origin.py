"""Origin throughput: `onair http` against nginx on the same store, and viewers blocked on LL-HLS.

    python -m bench.origin [--seconds 5] [--runs 3] [--connections 32] [--blocked 10000]

Needs the services (`make services`: `onair http` follows its Kafka topics), wrk, h2load and
nginx (Debian's; `make bench-tools`, which this bench also runs) and Go (the blocked viewers).
One run:

- the store: a local directory (what `make up` uses) with one live stream's objects as the
  roles write them: the classic live media playlist of a 720p30 rung (6 segments), a 0.2 s
  CMAF part (75 kB: 3 Mb/s) and a 1 MB MPEG-TS segment;
- the servers, one worker process each: `onair http` (uvicorn on uvloop + httptools) and
  nginx (`worker_processes 1`, `sendfile`, no access log) with that directory as its root;
- `wrk -t1 -c<connections>` for `--seconds` on each object from each server, `--runs`
  times in alternating order; the median requests/s and the ratio onair / nginx. onair's own
  LL-HLS media playlist (rendered in memory from `onair.parts`; nginx has none) is measured
  alone; then the playlist over HTTP/2 in clear text (`h2load`, 10 streams a connection)
  from onair's h2c port and an nginx `http2` listener;
- `--blocked` viewers (Go, bench/origin_blockers.go: one connection each) send a blocking
  reload for the next part (`_HLS_msn`/`_HLS_part`); once the origin counts them all parked,
  the part is written to the store and its PartReady produced on the real broker, as a
  transcode worker does. Wake-up delay = when a viewer has its whole answer minus just before
  the record was produced: p50, p99, max, and the playlist renders it cost. Then the same
  viewers against a reference (Go, bench/origin_parked.go) that parks them and, when told,
  writes onair's answer to each in one loop and does nothing else: what 10,000 answers cost
  on this machine at the least, timed from just before it is told (and its writes alone, as
  it timed them); onair's p99 / the reference's.

Goal (issue 10): playlists ≥ 0.3 x nginx (≥ 15,000 req/s), segments ≥ 1.0 x nginx, blocked
wake-up p99 ≤ 50 ms. Each server and wrk share the machine's cores: the load average is
printed with the figures.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.machine import build_go, describe
from objectstore.local import LocalStore
from pipeline import keys
from pipeline.playlist import SegmentEntry, render_media_playlist
from tests.harness import Platform, free_port
from tests.llfeed import PartFeed

ROOT = Path(__file__).resolve().parent.parent
BLOCKERS = Path(__file__).with_name("origin_blockers.go")
PARKED = Path(__file__).with_name("origin_parked.go")
RENDITION = "720p30"
IMMUTABLE = "public, max-age=31536000, immutable"
GOAL = {"playlist": 0.3, "segment": 1.0}


class Objects:
    """The live stream's objects in the store, and where each server serves them."""

    def __init__(self, store: LocalStore, channel: str, stream_id: str) -> None:
        self.store, self.channel, self.stream_id = store, channel, stream_id
        now_ms = int(time.time() * 1000)
        entries = [
            SegmentEntry(
                n,
                180_000,
                keys.live_segment_uri(stream_id, n),
                program_date_time_ms=now_ms + 2000 * n,
            )
            for n in range(100, 106)
        ]
        self.playlist_key = keys.live_media_key(channel, RENDITION)
        store.put(
            self.playlist_key,
            render_media_playlist(entries, media_sequence=100).encode(),
            content_type="application/vnd.apple.mpegurl",
            cache_control="public, max-age=1",
        )
        self.segment_key = keys.segment_key(stream_id, RENDITION, 105)
        store.put(self.segment_key, os.urandom(1024 * 1024), content_type="video/mp2t",
                  cache_control=IMMUTABLE)  # fmt: skip
        self.part_key = keys.cmaf_key(stream_id, RENDITION, keys.cmaf_segment_name(105, 3))
        store.put(self.part_key, os.urandom(75_000), content_type="video/iso.segment",
                  cache_control=IMMUTABLE)  # fmt: skip

    def onair_paths(self) -> dict[str, str]:
        folder = f"/live/{self.channel}/{RENDITION}"
        return {
            "playlist": f"{folder}/index.m3u8",
            "part": f"{folder}/{self.stream_id}/{self.part_key.rsplit('/', 1)[1]}",
            "segment": f"{folder}/{self.stream_id}/{self.segment_key.rsplit('/', 1)[1]}",
            "ll playlist": f"{folder}/ll.m3u8",
        }

    def nginx_paths(self) -> dict[str, str]:
        return {"playlist": f"/{self.playlist_key}", "part": f"/{self.part_key}",
                "segment": f"/{self.segment_key}"}  # fmt: skip


def start_nginx(work: Path, root: Path, port: int, h2c_port: int) -> subprocess.Popen[bytes]:
    prefix = work / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    # as root, nginx's worker would run as nobody: the store's files are its owner's alone
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/iso.segment m4s; }}
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{h2c_port} http2;
        root {root};
    }}
}}
""")
    log = (prefix / "out.log").open("wb")  # nginx writes it
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf)], stderr=subprocess.STDOUT, stdout=log
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                         check=False).returncode not in (0, 22):  # fmt: skip
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def wrk(url: str, seconds: float, connections: int) -> float:
    """Requests per second, or 0 when any request failed or was not a 2xx."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    text = result.stdout
    if result.returncode != 0 or "Non-2xx" in text or "Socket errors" in text:
        print(f"wrk {url}: {text[-800:]} {result.stderr[-400:]}", file=sys.stderr)
        return 0.0
    found = re.search(r"Requests/sec:\s+([\d.]+)", text)
    return float(found.group(1)) if found else 0.0


def h2load(url: str, seconds: float, connections: int) -> float:
    """Requests per second over h2c (prior knowledge), 10 streams per connection; 0 when
    any request failed."""
    result = subprocess.run(
        ["h2load", "-c", str(connections), "-m", "10", "-D", f"{seconds:g}", url],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    text = result.stdout
    found = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
    failed = re.search(r"(\d+) failed, (\d+) errored", text)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    bad = failed is None or failed.group(1) != "0" or failed.group(2) != "0"
    if result.returncode != 0 or found is None or bad or status is None or status.group(1) == "0":
        print(f"h2load {url}: {text[-800:]} {result.stderr[-400:]}", file=sys.stderr)
        return 0.0
    return float(found.group(1))


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_viewers(binary: Path, port: int, path: str, count: int) -> subprocess.Popen[str]:
    """The Go viewers (bench/origin_blockers.go), returned once every request is sent."""
    viewers = subprocess.Popen(
        [str(binary), "-addr", f"127.0.0.1:{port}", "-n", str(count), "-path", path],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert viewers.stdout is not None
    if viewers.stdout.readline().strip() != "ready":
        raise RuntimeError("the blocked viewers did not start")
    return viewers


def wakeup_figures(viewers: subprocess.Popen[str], count: int, released_ns: int) -> dict[str, Any]:
    """Each viewer's delay from `released_ns` to its whole answer."""
    out, _ = viewers.communicate(timeout=120)
    answers = json.loads(out)
    delays = sorted((done - released_ns) / 1e6 for done in answers["done_ns"])
    return {
        "viewers": count,
        "statuses": answers["statuses"],
        "errors": answers["errors"],
        "first_ms": delays[0] if delays else math_nan(),
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": delays[-1] if delays else math_nan(),
    }


def blocked_wakeup(
    platform: Platform, feed: PartFeed, binary: Path, count: int
) -> tuple[dict[str, Any], bytes, str]:
    """`count` viewers parked on the next part; the part lands; how long until each has it.
    Also returns the answer's body and Content-Encoding, for the reference."""
    feed.publish_upto((3, 0))
    playlist = f"/live/{feed.channel}/{RENDITION}/ll.m3u8"
    deadline = time.monotonic() + 30
    while b"000003.0.m4s" not in (platform.get_or_none(playlist) or b""):
        if time.monotonic() > deadline:
            raise TimeoutError("the LL origin never listed the bench's parts")
        time.sleep(0.1)
    before = platform.get("/metrics").decode()
    target = f"{playlist}?_HLS_msn=3&_HLS_part=1"
    started = time.monotonic()
    viewers = start_viewers(binary, platform.http_port, target, count)
    parked = 0.0
    while parked < count and time.monotonic() - started < 10:
        parked = metric(platform.get("/metrics").decode(), "onair_ll_blocked_requests")
        time.sleep(0.05)
    parked_after_s = time.monotonic() - started
    record = feed.store_part(3, 1)
    produced_ns = time.time_ns()
    feed.announce(record)
    feed.flush()
    figures = wakeup_figures(viewers, count, produced_ns)
    after = platform.get("/metrics").decode()
    figures["parked"] = int(parked)
    figures["parked_after_s"] = parked_after_s
    figures["renders"] = metric(after, "onair_ll_playlist_renders_total") - metric(
        before, "onair_ll_playlist_renders_total"
    )
    request = urllib.request.Request(platform.url(target), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        encoding = response.headers.get("Content-Encoding") or ""
    return figures, body, encoding


def blocked_reference(
    work: Path, server: Path, viewers_binary: Path, count: int, body: bytes, encoding: str
) -> dict[str, Any]:
    """The same viewers against bench/origin_parked.go: the same answer written to every
    parked connection, in one loop, by a Go server that does nothing else, when told."""
    answer = work / "parked-answer"
    answer.write_bytes(body)
    port = free_port()
    parked = subprocess.Popen(
        [str(server), "-addr", f"127.0.0.1:{port}", "-n", str(count), "-body", str(answer),
         "-encoding", encoding],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parked.stdin is not None and parked.stdout is not None
    try:
        if parked.stdout.readline().strip() != "listening":
            raise RuntimeError("the reference server did not start")
        viewers = start_viewers(viewers_binary, port, "/", count)
        said = parked.stdout.readline().split()  # "parked N"
        if said[:1] != ["parked"]:
            raise RuntimeError("the reference server did not start parking")
        released_ns = time.time_ns()
        parked.stdin.write("go\n")
        parked.stdin.flush()
        figures = wakeup_figures(viewers, count, released_ns)
        figures["parked"] = int(said[1])
        wrote = parked.stdout.readline().split()  # "wrote N in D"
        figures["writes_ms"] = float(wrote[3]) if len(wrote) == 4 else math_nan()
        return figures
    finally:
        parked.stdin.close()
        parked.wait(10)


def math_nan() -> float:
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math_nan()
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.origin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--blocked", type=int, default=10_000)
    args = parser.parse_args(argv)
    subprocess.run(["make", "-s", "bench-tools"], cwd=ROOT, check=True)  # wrk, nginx
    if shutil.which("go") is None:
        raise SystemExit("bench.origin needs Go for its blocked viewers (bench/origin_blockers.go)")
    work = Path(tempfile.mkdtemp(prefix="onair-origin-"))
    store_dir = work / "store"
    store = LocalStore(store_dir)
    # 4 s segments: a blocked request is answered 503 after three target durations (12 s),
    # longer than ten thousand connections take to open on two cores
    platform = Platform(work, ONAIR_STORAGE_URL=str(store_dir), ONAIR_SEGMENT_TARGET_S="4")
    channel, stream_id = f"origin_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    objects = Objects(store, channel, stream_id)
    viewers_binary, parked_binary = build_go(work, BLOCKERS), build_go(work, PARKED)
    nginx_port, nginx_h2c_port = free_port(), free_port()
    nginx = start_nginx(work, store_dir, nginx_port, nginx_h2c_port)
    print(describe(), flush=True)
    try:
        platform.start("http", "http")
        platform.wait_healthy("http")
        bootstrap = os.environ.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
        feed = PartFeed(store, bootstrap, channel, stream_id, RENDITION)
        feed.publish(0, 0)
        onair_base = f"http://127.0.0.1:{platform.http_port}"
        nginx_base = f"http://127.0.0.1:{nginx_port}"
        onair_paths, nginx_paths = objects.onair_paths(), objects.nginx_paths()
        for path in onair_paths.values():
            platform.get(path)  # every object answers 200 before anything is timed
        rates: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for name in onair_paths:
                servers = [("onair", onair_base + onair_paths[name])]
                if name in nginx_paths:
                    servers.append(("nginx", nginx_base + nginx_paths[name]))
                if run % 2:
                    servers.reverse()
                for server, url in servers:
                    rate = wrk(url, args.seconds, args.connections)
                    rates.setdefault((name, server), []).append(rate)
        print(f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, median of {args.runs} "
              f"(req/s; one worker process per server; load avg now "
              f"{os.getloadavg()[0]:.2f})")  # fmt: skip
        print(f"  {'object':<12} {'onair':>9} {'nginx':>9} {'ratio':>7}  goal")
        met = True
        for name in onair_paths:
            onair = statistics.median(rates[(name, "onair")])
            nginx_rate = statistics.median(rates.get((name, "nginx"), [0.0]))
            ratio = onair / nginx_rate if nginx_rate else float("nan")
            goal = GOAL.get(name)
            verdict = ""
            if goal is not None:
                ok = ratio >= goal and onair > 0
                met &= ok
                verdict = f"≥ {goal:g}x nginx: {'met' if ok else 'NOT met'}"
            nginx_text = f"{nginx_rate:>9.0f}" if nginx_rate else f"{'-':>9}"
            print(f"  {name:<12} {onair:>9.0f} {nginx_text} {ratio:>7.2f}  {verdict}")
        h2: dict[str, list[float]] = {}
        h2_urls = {
            "onair": f"http://127.0.0.1:{platform.h2c_port}{onair_paths['playlist']}",
            "nginx": f"http://127.0.0.1:{nginx_h2c_port}{nginx_paths['playlist']}",
        }
        for run in range(args.runs):
            for server in sorted(h2_urls, reverse=bool(run % 2)):
                h2.setdefault(server, []).append(
                    h2load(h2_urls[server], args.seconds, args.connections)
                )
        onair_h2, nginx_h2 = (statistics.median(h2[s]) for s in ("onair", "nginx"))
        h2_ratio = onair_h2 / nginx_h2 if nginx_h2 else float("nan")
        print(f"  {'playlist h2c':<12} {onair_h2:>9.0f} {nginx_h2:>9.0f} {h2_ratio:>7.2f}  "
              f"(h2load -c{args.connections} -m10; onair's h2c port: hypercorn)")  # fmt: skip
        wake, body, encoding = blocked_wakeup(platform, feed, viewers_binary, args.blocked)
        print(
            f"{wake['viewers']} viewers blocked on the next part ({wake['parked']} parked after "
            f"{wake['parked_after_s']:.1f} s): answers {wake['statuses']}; wake-up (record "
            f"produced → whole answer) first {wake['first_ms']:.0f} ms, p50 "
            f"{wake['p50_ms']:.0f} ms, p99 {wake['p99_ms']:.0f} ms, max {wake['max_ms']:.0f} ms; "
            f"{wake['renders']:.0f} playlist renders"
        )
        if wake["errors"]:
            print(f"  client errors: {wake['errors'][:5]}")
        floor = blocked_reference(work, parked_binary, viewers_binary, args.blocked, body, encoding)
        print(
            f"  reference (bench/origin_parked.go: Go, only writes the same {len(body)}-byte "
            f"answer to every parked viewer, in one loop, when told): answers "
            f"{floor['statuses']}; first {floor['first_ms']:.0f} ms, p50 "
            f"{floor['p50_ms']:.0f} ms, p99 {floor['p99_ms']:.0f} ms, max "
            f"{floor['max_ms']:.0f} ms; its {floor['parked']} writes alone took "
            f"{floor['writes_ms']:.0f} ms; onair's p99 {wake['p99_ms'] / floor['p99_ms']:.2f}x "
            "the reference's"
        )
        if floor["errors"]:
            print(f"  reference client errors: {floor['errors'][:5]}")
        wake_ok = wake["p99_ms"] <= 50 and wake["statuses"].get("200", 0) == args.blocked
        met &= wake_ok
        print(f"  goal p99 ≤ 50 ms, every viewer 200: {'met' if wake_ok else 'NOT met'}")
        print(describe())
        return 0 if met else 1
    finally:
        nginx.terminate()
        nginx.wait(10)
        platform.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
