"""Glass-to-glass latency: the camera's clock drawn into every frame, read back off the screen.

    python -m bench.glass [--seconds 60] [--viewers 200]

Needs the services (`make services`), ffmpeg and Chromium (`make test` installs them). One run:

- the platform: every role as its own process (ingest, packager, HTTP origin, one transcode
  worker per rung of the default ladder that a 720p30 source gets), on the real Kafka, with
  the store `make up` uses (a local directory; `--s3` for the S3 server);
- the camera: this process renders 1280x720 frames at 30 fps in real time, each carrying the
  wall clock's milliseconds (mod 2^24) as a row of 24 black/white blocks across the top over
  a moving pattern, and pipes them to ffmpeg, which encodes them as OBS would for low latency
  (x264 veryfast, `tune=zerolatency`, CBR 3 Mb/s, AAC 96 kb/s, a keyframe every second:
  OBS as the README sets it up for low latency; `--keyframe-s 2` for Twitch's 2 s) and
  publishes over RTMP. The time drawn is taken just before the frame goes to the encoder;
- the viewer: the player page in headless Chromium (bench/glass_view.mjs), `--seconds` of
  `/watch/<channel>` (LL-HLS, hls.js in low-latency mode), then as long of
  `/watch/<channel>?ll=0` (the classic playlists: the reference), same stream, same tab.
  For every frame shown, latency = the viewer's clock when the frame is displayed minus the
  capture time decoded from its pixels (same machine, same clock);
- the origin under LL load: `--viewers` simulated LL viewers (asyncio, one connection each)
  follow one rendition with blocking playlist requests and fetch every part, while the
  origin's /metrics counts store reads and playlist renders: per new part, the origin should
  read the store once and render each playlist version once.

Prints p50, p95, max and stalls for both paths, the ratio, the origin's counts per part, and
the machine. Goal (issue): LL p50 ≤ 1.5 s, p95 ≤ 2.0 s, no stall; classic ≤ 6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.machine import describe
from tests.clockcam import BITS, HEIGHT, STRIP_H, Camera
from tests.harness import Platform

ROOT = Path(__file__).resolve().parent.parent
VIEW_SCRIPT = Path(__file__).with_name("glass_view.mjs")
RUNGS = ("720p60", "480p30", "360p30", "160p30")  # the default ladder's rungs for 720p30


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def summarize(page: dict[str, Any]) -> dict[str, Any]:
    samples = [s / 1000 for s in page["samples"]]
    return {
        "frames": len(samples),
        "p50_s": statistics.median(samples) if samples else None,
        "p95_s": percentile(samples, 95) if samples else None,
        "max_s": max(samples) if samples else None,
        "stalls": page["stalls"],
        "stall_s": page["stallMs"] / 1000,
        "rejected": page["rejected"],
        "heights": page["levels"],
    }


def timeline(page: dict[str, Any], frames: int = 300) -> str:
    """The latency's median over each run of `frames` frames shown (10 s at 30 fps)."""
    samples = page["samples"]
    medians = [
        statistics.median(samples[i : i + frames]) / 1000 for i in range(0, len(samples), frames)
    ]
    return " ".join(f"{m:.2f}" for m in medians)


def stall_log(page: dict[str, Any]) -> str:
    waits = [w for w in page.get("stallLog", []) if w["waitedMs"] >= 100]
    text = ", ".join(
        f"{w['afterMs'] / 1000:.1f}/{w['waitedMs'] / 1000:.2f} (level {w['level']})" for w in waits
    )
    errors = "; ".join(
        f"{(e['afterMs'] or 0) / 1000:.1f} {e['details']}{' fatal' if e['fatal'] else ''}"
        f"{' ' + str(e.get('code')) + ' ' + str(e.get('url')) if e.get('code') else ''}"
        for e in page.get("errors", [])
    )
    return (text or "-") + (f"; hls.js errors: {errors}" if errors else "")


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            match = re.match(rf"{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
            if match:
                total += float(match.group(1))
    return total


async def ll_viewers(base: str, rendition: str, count: int, seconds: float) -> dict[str, Any]:
    """`count` LL viewers of one rendition: blocking reloads, every part fetched."""
    import httpx

    parts_seen: set[str] = set()
    errors: collections.Counter[str] = collections.Counter()  # by kind: a status, an exception
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(base_url=base, timeout=15, limits=limits) as client:

        async def viewer(n: int) -> None:
            url = f"/live/{{channel}}/{rendition}/ll.m3u8"
            deadline = time.monotonic() + seconds
            query = ""
            while time.monotonic() < deadline:
                try:
                    response = await client.get(url.format(channel=CHANNEL[0]) + query)
                    text = response.text
                    hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text)
                    if response.status_code != 200 or hint is None:
                        errors[str(response.status_code) if hint else "no hint"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    uri = hint.group(1)
                    msn, part = re.search(r"([0-9]+)\.([0-9]+)\.m4s$", uri).groups()  # type: ignore[union-attr]
                    part_url = f"/live/{CHANNEL[0]}/{rendition}/{uri}"
                    got = await client.get(part_url)
                    if got.status_code == 200:
                        parts_seen.add(uri)
                    query = f"?_HLS_msn={int(msn)}&_HLS_part={int(part)}"
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(viewer(n) for n in range(count)))
    return {"parts": len(parts_seen), "errors": sum(errors.values()), "kinds": dict(errors)}


CHANNEL: list[str] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--s3", action="store_true", help="store on the S3 server, not a dir")
    parser.add_argument(
        "--keyframe-s",
        type=int,
        default=1,
        help="the camera's keyframe interval (OBS's Keyframe Interval; the README's advice for "
        "low latency: 1): one GOP, one segment",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onair-glass-"))
    # the store `make up` uses (a local directory); `--s3` for the S3 server instead
    env = {} if args.s3 else {"ONAIR_STORAGE_URL": str(work / "store")}
    platform = Platform(work, **env)
    channel = f"glass_{uuid.uuid4().hex[:6]}"
    CHANNEL.append(channel)
    print(describe(), flush=True)
    try:
        platform.cli("topics")
        key = platform.create_channel(channel)["stream_key"]
        platform.start_live(RUNGS)
        platform.wait_healthy("http")
        publish_s = 2 * args.seconds + 60
        camera = Camera(
            f"rtmp://127.0.0.1:{platform.rtmp_port}/live/{key}",
            publish_s,
            work / "camera.log",
            keyframe_s=args.keyframe_s,
        )
        camera.start()
        base = f"http://127.0.0.1:{platform.http_port}"
        deadline = time.monotonic() + 60
        while platform.get_or_none(f"/live/{channel}/ll.m3u8") is None:
            if time.monotonic() > deadline:
                classic = platform.get_or_none(f"/live/{channel}/master.m3u8")
                media = platform.get_or_none(f"/live/{channel}/360p30/ll.m3u8")
                raise TimeoutError(
                    f"no LL master playlist after 60 s (classic master: {classic!r}; "
                    f"360p30 LL playlist: {media!r})"
                )
            time.sleep(0.5)
        time.sleep(4)  # a few segments in every rendition
        view = subprocess.run(
            ["node", str(VIEW_SCRIPT), "--url", f"{base}/watch/{channel}",
             "--url2", f"{base}/watch/{channel}?ll=0", "--seconds", str(args.seconds),
             "--bits", str(BITS), "--strip-fraction", str(STRIP_H / HEIGHT),
             "--chromium", args.chromium],
            capture_output=True, text=True, cwd=ROOT, timeout=args.seconds + 180,
        )  # fmt: skip
        result = json.loads(view.stdout or "{}")
        if view.returncode != 0 or "pages" not in result:
            print(view.stdout[-3000:], view.stderr[-3000:], file=sys.stderr)
            return 1
        before = platform.get("/metrics").decode()
        load = asyncio.run(ll_viewers(base, "360p30", args.viewers, 20.0))
        after = platform.get("/metrics").decode()
        camera.join(publish_s + 30)
    finally:
        platform.stop()
    ll, classic = (summarize(p) for p in result["pages"])
    print(f"{'path':<10} {'frames':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
          f"{'stalls':>7} {'stall s':>8}  rungs (height: frames)")  # fmt: skip
    for name, row in (("LL-HLS", ll), ("classic", classic)):
        print(
            f"{name:<10} {row['frames']:>7} {row['p50_s']:>7.2f} {row['p95_s']:>7.2f} "
            f"{row['max_s']:>7.2f} {row['stalls']:>7} {row['stall_s']:>8.1f}  {row['heights']}"
        )
    for name, page in (("LL-HLS", result["pages"][0]), ("classic", result["pages"][1])):
        print(f"{name} p50 per 10 s of frames shown: {timeline(page)}; stalls "
              f"(s after start, s waited): {stall_log(page)}; hls.js target latency at the end: "
              f"{page.get('targetLatency')} s, its latency {page.get('hlsLatency')} s")  # fmt: skip
    join = result["pages"][0].get("join") or {}
    print("LL join (s; hls.js's view when playback began): " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float | int) else f"{k} {v}" for k, v in join.items()
    ))  # fmt: skip
    for wait in result["pages"][0].get("recentAtStall", []):
        print("  LL loads before a wait (ms after start, what, took ms):",
              " ".join(f"{x['t']}:{x['what']}:{x['url']}:{x['ms']}" for x in wait))  # fmt: skip
    print(f"LL p50 / classic p50: {ll['p50_s'] / classic['p50_s']:.2f}x "
          f"(classic is {classic['p50_s'] / ll['p50_s']:.1f}x later)")  # fmt: skip
    reads = metric(after, "onair_http_cache_store_reads_total") - metric(
        before, "onair_http_cache_store_reads_total"
    )
    renders = metric(after, "onair_ll_playlist_renders_total") - metric(
        before, "onair_ll_playlist_renders_total"
    )
    parts = max(1, load["parts"])
    print(
        f"origin under {args.viewers} LL viewers of 360p30 for 20 s: {load['parts']} parts, "
        f"{reads / parts:.2f} store reads per part (every object the viewers and the two "
        f"players fetched), {renders / parts:.2f} playlist renders per part (all renditions), "
        f"{load['errors']} errors {load['kinds'] or ''}"
    )
    goal = ll["p50_s"] <= 1.5 and ll["p95_s"] <= 2.0 and ll["stalls"] == 0
    print(f"goal (LL p50 <= 1.5 s, p95 <= 2.0 s, no stall; classic <= 6 s): "
          f"{'met' if goal and classic['p50_s'] <= 6 else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
