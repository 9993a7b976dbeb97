"""The `onair` command: set-up, channels, status, and one sub-command per role.

    onair up                               every role on this machine + channel `demo`
    onair channel create NAME [--json]     prints the stream key once
    onair channel rotate-key NAME [--json]
    onair channel list
    onair status                           live streams, consumer-group lag per role
    onair topics                           create/reconcile every topic
    onair ingest | package | http          one role in this process
    onair transcode --rendition 720p60     one rung's transcode worker

This is the top floor: it may import every role; nothing below imports it (see
tests/unit/test_layers.py). Each role's command imports its role when it runs, so `onair
channel list` does not load PyAV.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onair import cli_chat, cli_vod
from onair.cli_role import instance_id, serve_role_metrics, stop_on_signals
from onair.supervisor import Supervisor, report_ready
from pipeline.errors import ConfigError, OnairError
from pipeline.settings import Settings

logger = logging.getLogger("onair")

Command = Callable[[argparse.Namespace, Settings], int]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def ensure_topics(settings: Settings, only: set[str] | None = None) -> list[str]:
    """Create or reconcile every topic (or the `only` ones) with this deployment's settings."""
    from topics.admin import ensure_topics as ensure
    from topics.specs import all_topics

    specs = all_topics(settings.partitions, settings.replay_retention_ms, settings.replication)
    return ensure(settings.kafka_bootstrap, [s for s in specs if only is None or s.name in only])


# ---- channels ------------------------------------------------------------------------------


def _directory(settings: Settings) -> Any:
    from topics.channels import ChannelDirectory

    directory = ChannelDirectory(settings.kafka_bootstrap)
    directory.start()
    return directory


def _print_key(settings: Settings, channel: str, key: str, as_json: bool) -> None:
    info = {
        "channel": channel,
        "stream_key": key,
        "rtmp_url": settings.rtmp_url,
        "playback_url": settings.playback_url(channel),
    }
    if as_json:
        print(json.dumps(info))
        return
    print(f"channel:      {channel}")
    print(f"rtmp url:     {settings.rtmp_url}   (OBS: Server)")
    print(f"stream key:   {key}   (OBS: Stream Key; shown once, keep it secret)")
    print("OBS output:   Keyframe Interval 1 s, x264 Tune zerolatency, CBR (low latency)")
    print(
        "publish with: ffmpeg -re -i INPUT -c:v libx264 -tune zerolatency "
        '-force_key_frames "expr:gte(t,n_forced*1)" -c:a aac '
        f"-f flv {settings.rtmp_url}/<stream key>"
    )
    if settings.part_target_ms > 0:
        print(f"low latency:  {settings.low_latency_url(channel)}   (LL-HLS, CMAF parts)")
    print(f"watch:        {settings.playback_url(channel)}   (classic HLS)")
    print(f"ffplay:       ffplay {settings.playback_url(channel)}")
    print(f"player:       {settings.player_url(channel)}   (LL-HLS; ?ll=0 for classic)")


def cmd_channel_create(args: argparse.Namespace, settings: Settings) -> int:
    ensure_topics(settings)
    directory = _directory(settings)
    try:
        key = directory.create(args.name)
    finally:
        directory.stop()
    assert key is not None
    _print_key(settings, args.name, key, args.json)
    return 0


def cmd_channel_rotate(args: argparse.Namespace, settings: Settings) -> int:
    directory = _directory(settings)
    try:
        key = directory.rotate_key(args.name)
    finally:
        directory.stop()
    _print_key(settings, args.name, key, args.json)
    return 0


def cmd_channel_list(args: argparse.Namespace, settings: Settings) -> int:
    del args
    directory = _directory(settings)
    try:
        for name in directory.names():
            print(name)
    finally:
        directory.stop()
    return 0


def demo_key(settings: Settings, channel: str = "demo") -> str:
    """The demo channel's key for `onair up`: created once, kept in the state dir (mode 600)
    so the same OBS settings work across restarts; re-issued if the file is gone."""
    path = Path(settings.state_dir) / f"{channel}.key"
    directory = _directory(settings)
    try:
        if path.exists() and directory.find_by_key(path.read_text().strip()) == channel:
            return path.read_text().strip()
        key: str = directory.create(channel, exist_ok=True) or directory.rotate_key(channel)
    finally:
        directory.stop()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


# ---- status --------------------------------------------------------------------------------


def role_groups(settings: Settings) -> dict[str, tuple[str, str]]:
    """Consumer group and topic of each role, for lag."""
    from topics.specs import GOPS, SEGMENTS, STREAMS

    groups = {
        f"transcode {r.name}": (settings.group(f"transcode.{r.name}"), GOPS)
        for r in settings.ladder.rungs
    }
    groups["package"] = (settings.group("packager"), SEGMENTS)
    groups["vod"] = (settings.group("vod"), STREAMS)
    return groups


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from pipeline.streams import live_streams
    from topics.admin import group_lag
    from topics.deadletter import count_by_group
    from topics.specs import DEAD_LETTERS, STREAMS
    from topics.table import TableReader

    streams = TableReader(settings.kafka_bootstrap, STREAMS, None)
    streams.start()
    streams.stop()
    live = live_streams(streams.snapshot())
    print(f"live streams: {len(live)}")
    for stream in live:
        print(f"  {stream['channel']:<16} {stream['stream_id']}")
    print("consumer-group lag (messages behind, per partition):")
    for role, (group, topic) in role_groups(settings).items():
        try:
            lags = group_lag(settings.kafka_bootstrap, group, topic)
        except Exception as exc:  # a group that never ran has nothing to say
            print(f"  {role:<18} {group:<28} unavailable: {exc}")
            continue
        total = sum(p.lag for p in lags)
        per = " ".join(str(p.lag) for p in lags)
        print(f"  {role:<18} {group:<28} total {total:<6} [{per}]")
    try:
        dead = count_by_group(settings.kafka_bootstrap)
    except Exception as exc:
        print(f"dead-lettered events ({DEAD_LETTERS}): unavailable: {exc}")
        return 0
    print(f"dead-lettered events ({DEAD_LETTERS}): {sum(dead.values())}")
    for group, count in sorted(dead.items()):
        print(f"  {group:<47} {count}")
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    del args
    created = ensure_topics(settings)
    print("created: " + (", ".join(created) or "nothing (all present)"))
    return 0


# ---- roles ---------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import secrets
    import socket

    from gateway.ingest.handler import IngestHandler
    from gateway.ingest.lease import LeaseTimings
    from gateway.ingest.leases import LeaseBook, producer_settings
    from gateway.rtmp.guard import AuthGuard
    from gateway.rtmp.limits import RtmpLimits
    from gateway.rtmp.server import RtmpServer
    from pipeline.gop import GopLimits
    from pipeline.health import Health
    from pipeline.metrics import Registry
    from topics.channels import ChannelDirectory
    from topics.client import AsyncProducer
    from topics.specs import INGEST_LEASES

    registry = Registry()
    health = Health("ingest")
    serve_role_metrics(settings, args, registry, health)
    timings = LeaseTimings(settings.ingest_lease_ttl_s, settings.ingest_lease_renew_s)
    # onair.ingest.leases is new to deployments older than it: ingest creates it (only it: the
    # others are `onair topics`'s, and until they exist /healthz says what ingest waits for)
    ensure_topics(settings, only={INGEST_LEASES})
    holder = f"{socket.gethostname()}-ingest-{os.getpid()}-{secrets.token_hex(2)}"

    async def run() -> None:
        health.starting("reading the channels and the ingest leases from Kafka")
        # every chunk acknowledged or failed within the lease's margin (see gateway/ingest/lease.py)
        producer = AsyncProducer(settings.kafka_bootstrap, **producer_settings(timings))
        channels = ChannelDirectory(settings.kafka_bootstrap, registry=registry)
        leases = LeaseBook(settings.kafka_bootstrap, producer, holder=holder, registry=registry)
        for follower in (channels.table.follower, leases.follower):  # /healthz: degraded
            health.watch(follower.name, follower.probe)  # while one restarts
        await asyncio.gather(asyncio.to_thread(channels.start), asyncio.to_thread(leases.start))
        handler = IngestHandler(
            producer,
            channels,
            settings.ladder,
            leases,
            reconnect_grace_s=settings.reconnect_grace_s,
            timings=timings,
            gop_part_ms=settings.gop_part_ms,
            gop_limits=GopLimits(settings.gop_max_duration_ms, settings.gop_max_bytes),
            registry=registry,
        )
        guard = AuthGuard(max_failures=settings.auth_max_failures, block_s=settings.auth_block_s)
        limits = RtmpLimits(
            min_chunk_size=settings.rtmp_min_chunk_size,
            prepublish_max_bytes=settings.rtmp_prepublish_max_bytes,
            prepublish_max_messages=settings.rtmp_prepublish_max_messages,
            max_messages_per_s=settings.rtmp_max_messages_per_s,
            parse_slice_bytes=settings.rtmp_parse_slice_bytes,
            parse_cpu_share=settings.rtmp_parse_cpu_share,
        )
        server = RtmpServer(
            settings.rtmp_host,
            settings.rtmp_port,
            handler,
            guard,
            limits=limits,
            registry=registry,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await handler.start()  # ends what a predecessor left unended, once it is due
        await server.start()
        logger.info("ingest %s: rtmp://%s:%d/live", holder, settings.rtmp_host, server.port)
        health.ok()
        try:
            await stop.wait()
        finally:
            await server.stop()  # publishes are interrupted: they resume on any ingest in time
            await handler.stop()
            producer.close()
            channels.stop()
            leases.stop()

    asyncio.run(run())
    return 0


def cmd_transcode(args: argparse.Namespace, settings: Settings) -> int:
    from objectstore import open_store
    from pipeline.health import Health
    from pipeline.metrics import Registry
    from workers.transcode.worker import TranscodeWorker

    try:
        rung = settings.ladder.get(args.rendition)
    except KeyError:
        names = ", ".join(r.name for r in settings.ladder.rungs)
        raise OnairError(f"no rung {args.rendition!r} in the ladder ({names})") from None
    registry = Registry()
    health = Health(f"transcode {rung.name}")
    serve_role_metrics(settings, args, registry, health)
    worker = TranscodeWorker(
        settings.kafka_bootstrap,
        rung,
        settings.ladder,
        open_store(settings.storage_url, **settings.s3_options()),
        preset=settings.x264_preset,
        source_passthrough=settings.source_passthrough,
        registry=registry,
        group=settings.group(f"transcode.{rung.name}"),
        instance_id=instance_id(f"transcode-{rung.name}", args.instance),
        health=health,
        part_target_ms=settings.part_target_ms,
        ts_segments=settings.ts_segments,
    )
    stop_on_signals(worker.stop_event.set)
    worker.run()
    return 0


def cmd_package(args: argparse.Namespace, settings: Settings) -> int:
    from objectstore import open_store
    from pipeline.health import Health
    from pipeline.metrics import Registry
    from workers.packager.worker import PackagerWorker

    registry = Registry()
    health = Health("package")
    serve_role_metrics(settings, args, registry, health)
    if args.verbose:  # every event the packager takes or ignores
        logging.getLogger("workers.packager").setLevel(logging.DEBUG)
    worker = PackagerWorker(
        settings.kafka_bootstrap,
        open_store(settings.storage_url, **settings.s3_options()),
        group=settings.group("packager"),
        window_size=settings.playlist_window,
        partitions=settings.partitions,
        replication=settings.replication,
        instance_id=instance_id("package", args.instance),
        registry=registry,
        health=health,
    )
    stop_on_signals(worker.stop_event.set)
    worker.run()
    return 0


def cmd_http(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.http.listen import Listeners, serve
    from gateway.http.serve import build_app

    port = args.port if args.port is not None else settings.http_port
    for name, path in (("ONAIR_TLS_CERT_FILE", settings.tls_cert_file),
                       ("ONAIR_TLS_KEY_FILE", settings.tls_key_file)):  # fmt: skip
        if path and not Path(path).is_file():
            raise ConfigError(name, f"no such file: {path}")
    ensure_topics(settings)  # chat follows onair.chat/onair.moderation from the start
    listeners = Listeners(
        host=settings.http_host,
        http_port=port,
        h2c_port=settings.h2c_port,
        https_port=settings.https_port,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
    )
    serve(build_app(settings), listeners)
    return 0


# ---- up: every role on this machine --------------------------------------------------------


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    del args
    ensure_topics(settings)
    key = demo_key(settings)
    base = settings.up_metrics_port_base
    ports = {"ingest": base, "package": base + 1, "vod": base + 2}
    roles: dict[str, list[str]] = {
        "ingest": ["ingest", "--metrics-port", str(ports["ingest"])],
        "package": ["package", "--metrics-port", str(ports["package"])],
        "vod": ["vod", "--metrics-port", str(ports["vod"])],
        "http": ["http"],
    }
    for index, rung in enumerate(settings.ladder.rungs):
        name = f"transcode {rung.name}"
        ports[name] = base + 9 + index
        roles[name] = ["transcode", "--rendition", rung.name, "--metrics-port", str(ports[name])]
    ports["http"] = settings.http_port
    log_dir = Path(settings.state_dir) / "logs"
    supervisor = Supervisor(roles, log_dir)
    stop_on_signals(supervisor.stop)
    print("onair is starting: " + ", ".join(roles))
    _print_key(settings, "demo", key, as_json=False)
    http2 = [f"h2c :{settings.h2c_port}"] if settings.h2c_port else []
    if settings.tls_cert_file:
        http2.append(f"h2 over TLS https://{settings.public_host}:{settings.https_port}/")
    if http2:
        print(f"http/2:       {', '.join(http2)}")
    print(f"logs:         {log_dir}/")
    print(f"metrics:      :{settings.http_port}/metrics, :{base}-{base + 2}, :{base + 9}+")
    print("stop with Ctrl-C", flush=True)
    health = {name: f"http://127.0.0.1:{port}/healthz" for name, port in ports.items()}
    threading.Thread(
        target=report_ready, args=(health, supervisor.stopping), name="ready", daemon=True
    ).start()
    try:
        supervisor.run()
    finally:
        supervisor.stop()
    return 0


# ---- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onair", description="Live streaming on Kafka.")
    parser.add_argument("--log-level", default=os.environ.get("ONAIR_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(func=func)
        return command

    add("up", cmd_up, "run every role on this machine and create channel demo")
    add("status", cmd_status, "live streams and consumer-group lag per role")
    add("topics", cmd_topics, "create or reconcile every topic")

    channel = sub.add_parser("channel", help="create channels and manage stream keys")
    channel_sub = channel.add_subparsers(dest="channel_command", required=True)
    create = channel_sub.add_parser("create", help="create a channel (prints its key once)")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_channel_create)
    rotate = channel_sub.add_parser("rotate-key", help="issue a new stream key")
    rotate.add_argument("name")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=cmd_channel_rotate)
    listing = channel_sub.add_parser("list", help="list channels")
    listing.set_defaults(func=cmd_channel_list)

    for name, func, help_text in [
        ("ingest", cmd_ingest, "RTMP ingest server"),
        ("package", cmd_package, "packager: live playlists from onair.segments"),
        ("transcode", cmd_transcode, "transcode worker for one rung"),
        ("http", cmd_http, "HTTP gateway: HLS origin, player, API, chat"),
    ]:
        role = add(name, func, help_text)
        role.add_argument("--metrics-port", type=int, default=None)
        if name == "transcode":
            role.add_argument("--rendition", required=True, help="rung name, e.g. 720p60")
        if name == "package":
            role.add_argument(
                "--verbose", action="store_true", help="log every event taken or ignored"
            )
        if name in ("transcode", "package"):
            role.add_argument(
                "--instance",
                default="0",
                help="this process's number among its role's processes on this host "
                "(static group membership: a restarted process takes its partitions back)",
            )
        if name == "http":
            role.add_argument("--port", type=int, default=None)
    # sub-commands of other parts, registered explicitly: a missing dependency fails loudly
    cli_chat.register(sub, Settings.from_env)
    cli_vod.register(sub, Settings.from_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        code: int = args.func(args, settings)
        return code
    except OnairError as exc:
        print(f"onair: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
