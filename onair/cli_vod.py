"""`onair vod`: the VOD worker role, and `onair vod rebuild` (replay from the GOP topic).

    onair vod [--instance N] [--metrics-port P]      the worker: StreamEnded → a finished VOD
    onair vod rebuild STREAM_ID [--renditions 720p30,480p30,540p30:2000]
                                [--output DIR|s3://bucket/prefix] [--workers N] [--vod-files]

`onair.cli` registers it (`register()`).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onair.cli_role import instance_id, serve_role_metrics, stop_on_signals
from pipeline.settings import Settings

logger = logging.getLogger(__name__)


def register(sub: Any, settings_factory: Callable[[], Settings]) -> None:
    del settings_factory  # main() builds the settings once and hands them to each command
    vod = sub.add_parser(
        "vod",
        help="VOD worker (StreamEnded → playlists, MP4, thumbnails, catalog); `vod rebuild`",
        description="Without a sub-command: run the VOD worker in this process.",
    )
    vod.add_argument("--metrics-port", type=int, default=None)
    vod.add_argument(
        "--instance",
        default="0",
        help="this process's number among the VOD workers on this host (static membership)",
    )
    vod.add_argument(
        "--thumbnail-interval", type=float, default=10.0, help="seconds between thumbnails"
    )
    vod.add_argument(
        "--segment-wait",
        type=float,
        default=600.0,
        help="longest wait for a rendition's last segment after the stream ended (seconds)",
    )
    vod.add_argument(
        "--no-prefetch",
        action="store_true",
        help="do not copy live segments to the local spool while streams run",
    )
    vod.set_defaults(func=cmd_vod)
    commands = vod.add_subparsers(dest="vod_command")
    rebuild = commands.add_parser(
        "rebuild",
        help="re-run transcode and packaging for an ended stream from onair.ingest.gops",
        description="Reads the stream's GOP chunks from the offsets its StreamStarted and "
        "StreamEnded recorded and writes a fresh output in the platform's layout "
        "(streams/<id>/<rendition>/NNNNNN.ts, vod/<id>/master.m3u8, vod/<id>/<rendition>/"
        "index.m3u8). Fails if the chunks fell out of the topic's retention.",
    )
    rebuild.add_argument("stream_id")
    rebuild.add_argument(
        "--renditions",
        default="",
        help="comma-separated rungs: ladder names or labels (720p60, 720p30) or new ones "
        "with a bitrate in kbps (540p30:2000); default: the live ladder's rule",
    )
    rebuild.add_argument(
        "--output",
        default="",
        help="a directory or s3://bucket/prefix; default: rebuilds/<stream_id>-<time>/ in "
        "the platform's store",
    )
    rebuild.add_argument(
        "--workers", type=int, default=None, help="transcode processes (default: CPU count)"
    )
    rebuild.add_argument(
        "--vod-files", action="store_true", help="also MP4s, poster, thumbnails, chapters"
    )
    rebuild.add_argument("--json", action="store_true", help="print the result as JSON")
    rebuild.set_defaults(func=cmd_rebuild)


def cmd_vod(args: argparse.Namespace, settings: Settings) -> int:
    from objectstore import open_store
    from pipeline.health import Health
    from pipeline.metrics import Registry
    from workers.vod.worker import VodWorker

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every stack
    registry = Registry()
    health = Health("vod")
    serve_role_metrics(settings, args, registry, health)
    worker = VodWorker(
        settings.kafka_bootstrap,
        open_store(settings.storage_url, **settings.s3_options()),
        Path(settings.state_dir) / "vod-spool",
        registry=registry,
        group=settings.group("vod"),
        instance_id=instance_id("vod", args.instance),
        thumbnail_interval_s=args.thumbnail_interval,
        segment_wait_s=args.segment_wait,
        prefetch=not args.no_prefetch,
        health=health,
    )
    stop_on_signals(worker.stop_event.set)
    worker.run()
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from workers.rebuild.output import StoreSpec
    from workers.rebuild.progress import ProgressBar
    from workers.rebuild.replay import rebuild

    options = tuple(sorted(settings.s3_options().items()))
    if args.output:
        output = StoreSpec(args.output, options)
    else:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        output = StoreSpec(settings.storage_url, options, f"rebuilds/{args.stream_id}-{stamp}")
    renditions = [r.strip() for r in args.renditions.split(",") if r.strip()]
    bar: ProgressBar | None = None

    def progress(done: int, media_s: float) -> None:
        nonlocal bar
        if bar is None:
            return
        bar.update(done, media_s)

    def start_bar(total: int) -> None:
        nonlocal bar
        bar = ProgressBar(f"rebuild {args.stream_id}", total)

    result = rebuild(
        settings.kafka_bootstrap,
        args.stream_id,
        output,
        ladder=settings.ladder,
        renditions=renditions or None,
        workers=args.workers,
        preset=settings.x264_preset,
        source_passthrough=settings.source_passthrough,
        part_target_ms=settings.part_target_ms,
        ts_segments=settings.ts_segments,
        vod_files=args.vod_files,
        progress=progress,
        on_start=start_bar,
    )
    if bar is not None:
        bar.finish()
    summary = {
        "stream_id": result.stream_id,
        "output": result.output,
        "master": result.master,
        "renditions": result.renditions,
        "segments": result.segments,
        "media_s": round(result.media_s, 3),
        "wall_s": round(result.wall_s, 3),
        "speed": round(result.speed, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"rebuilt {result.stream_id}: {result.segments} segments x "
            f"{len(result.renditions)} renditions ({', '.join(result.renditions)}), "
            f"{result.media_s:.1f} s of media in {result.wall_s:.1f} s "
            f"({result.speed:.1f}x real time)"
        )
        print(f"output: {result.output}   master: {result.master}")
    return 0
