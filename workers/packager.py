"""The packager: faust agents that turn `SegmentReady` events into live HLS playlists.

State lives in faust tables (in memory, backed by their changelog topics), so a restarted
packager recovers the same windows and continues the same playlists — same media sequence,
same discontinuity count. Table keys stay in the partition of the segment's stream, so the
tables are co-partitioned with `onair.segments` and each packager instance owns whole streams.

Store layout written here:
    live/<channel>/master.m3u8               master (written once every rendition has a segment)
    live/<channel>/<rendition>/index.m3u8    live media playlist, segments as <stream_id>/N.ts
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import faust

from pipeline.errors import CodecError
from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.playlist import (
    BandwidthMeter,
    LiveWindow,
    SegmentEntry,
    Variant,
    render_master_playlist,
)
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.client import pin_group_to_end
from topics.ready import wait_for_topics
from topics.specs import SEGMENTS, changelog_topic, packager_changelogs

logger = logging.getLogger(__name__)

PLAYLIST_CACHE_CONTROL = "public, max-age=1"
M3U8 = "application/vnd.apple.mpegurl"


@dataclass
class Packager:
    """What the agent does with one event; kept apart from faust so it reads plainly."""

    store: ObjectStore
    windows: MutableMapping[str, Any]
    masters: MutableMapping[str, Any]
    window_size: int = 6
    registry: Registry = field(default_factory=Registry)
    codec: Codec = field(default_factory=Codec)

    def __post_init__(self) -> None:
        m = self.registry
        self.events = m.counter("onair_packager_segments_total", "SegmentReady events handled.")
        self.bad = m.counter("onair_packager_bad_events_total", "Events that could not be read.")
        self.writes = m.counter("onair_packager_playlist_writes_total", "Playlists written.")
        self.latency = m.histogram(
            "onair_packager_listed_latency_seconds",
            "From ingest closing a GOP to its segment listed in a media playlist.",
        )

    async def on_event(self, value: bytes | None) -> None:
        """Apply one SegmentReady to the tables, then write what changed: the media playlist
        first, the master after (a master never names a missing playlist)."""
        media: dict[str, str] = {}
        masters: dict[str, str] = {}
        listed: list[int] = []
        self._apply(value, media, masters, listed)
        await asyncio.gather(*(self._put(key, text) for key, text in media.items()))
        await asyncio.gather(*(self._put(key, text) for key, text in masters.items()))
        now = time.time()
        for ingest_time_ms in listed:
            self.latency.observe(max(0.0, now - ingest_time_ms / 1000))

    def _apply(
        self,
        value: bytes | None,
        media: dict[str, str],
        masters: dict[str, str],
        listed: list[int],
    ) -> None:
        try:
            record = self.codec.expect("SegmentReady", value)
        except CodecError as exc:
            self.bad.inc()
            logger.warning("packager skipped an event: %s", exc)
            return
        self.events.inc()
        stream_id, rendition, channel = record["stream_id"], record["rendition"], record["channel"]
        key = f"{stream_id}/{rendition}"
        state = self.windows.get(key)
        window = LiveWindow.from_dict(state) if state is not None else LiveWindow(self.window_size)
        if record["end_of_stream"]:
            changed = window.end_at(record["sequence"])
        else:
            changed = window.add(
                SegmentEntry(
                    sequence=record["sequence"],
                    duration_90k=record["duration_90k"],
                    uri=f"{stream_id}/{record['sequence']:06d}.ts",
                    discontinuity=record["discontinuity"],
                    program_date_time_ms=record["program_date_time_ms"],
                    size_bytes=record["size_bytes"],
                    start_pts_90k=record["start_pts_90k"],
                )
            )
        if not changed:
            logger.debug(
                "packager: %s segment %d changes nothing (next %s, %d pending)",
                key,
                record["sequence"],
                window.next_sequence,
                len(window.pending),
            )
            return
        self.windows[key] = window.to_dict()
        if window.ended:
            logger.info("packager: %s ended with %d segments listed", key, len(window.segments))
        media[f"live/{channel}/{rendition}/index.m3u8"] = window.render()
        if not record["end_of_stream"]:
            listed.append(record["ingest_time_ms"])
            text = self._update_master(record)
            if text:
                masters[f"live/{channel}/master.m3u8"] = text

    def _update_master(self, record: dict[str, Any]) -> str | None:
        """Fold the segment into its stream's variants; → the master text when it changed."""
        stream_id = record["stream_id"]
        state: dict[str, Any] = self.masters.get(stream_id) or {"variants": {}, "written": ""}
        variant = state["variants"].get(record["rendition"]) or {
            "meter": {"peak_bps": 0, "total_bits": 0, "total_90k": 0}
        }
        meter = BandwidthMeter(**variant["meter"])
        meter.add(record["size_bytes"], record["duration_90k"])
        variant.update(
            meter=dict(
                peak_bps=meter.peak_bps, total_bits=meter.total_bits, total_90k=meter.total_90k
            ),
            width=record["width"],
            height=record["height"],
            fps=record["fps"],
            codecs=record["codecs"],
        )
        state["variants"][record["rendition"]] = variant
        expected = set(record["renditions"]) or {record["rendition"]}
        text = ""
        if expected <= set(state["variants"]):
            text = render_master_playlist(
                [
                    Variant(
                        uri=f"{name}/index.m3u8",
                        bandwidth_bps=v["meter"]["peak_bps"],
                        average_bandwidth_bps=BandwidthMeter(**v["meter"]).average_bps,
                        width=v["width"],
                        height=v["height"],
                        fps=v["fps"],
                        codecs=v["codecs"],
                        name=name,
                    )
                    for name, v in state["variants"].items()
                    if name in expected
                ]
            )
        changed = bool(text) and text != state["written"]
        if changed:
            state["written"] = text
        self.masters[stream_id] = state
        return text if changed else None

    async def _put(self, key: str, text: str) -> None:
        await asyncio.to_thread(
            self.store.put,
            key,
            text.encode(),
            content_type=M3U8,
            cache_control=PLAYLIST_CACHE_CONTROL,
        )
        self.writes.inc()


def build_app(
    bootstrap: str,
    store: ObjectStore,
    *,
    window_size: int = 6,
    partitions: int = 6,
    replication: int = 1,
    app_id: str = "onair-packager",
    registry: Registry | None = None,
    health: Health | None = None,
    datadir: str = ".onair/faust",
) -> faust.App:
    """The faust app: one topic, two tables, one agent. Built by a factory (not at import) so
    the broker and store come from the entry point, before faust finalizes its settings.

    A dynamic group member (no static membership): a restarted packager rejoins through a
    rebalance and faust's table recovery, the path faust is best tested on; static
    membership made restarts hang now and then in the e2e kill test.
    """
    app = faust.App(
        app_id,
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        autodiscover=False,
        store="memory://",
        datadir=datadir,  # under the state dir, never `<app id>-data/` in the working dir
        web_enabled=False,
        producer_acks=-1,
        topic_partitions=partitions,
        topic_replication_factor=replication,
        broker_commit_every=1,
        broker_session_timeout=10.0,
        # a new group starts at the live edge; run_worker pins it there before it joins
        consumer_auto_offset_reset="latest",
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        table_cleanup_interval=60.0,
    )
    segments = app.topic(
        SEGMENTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    # "<stream>/<rendition>" → LiveWindow; "<stream>" → variants and bandwidth meters
    windows, masters = app.Table("windows"), app.Table("masters")
    for table in (windows, masters):
        # run_worker creates these topics before faust starts: the names must agree
        assert table.changelog_topic.get_topic_name() == changelog_topic(app_id, table.name)
    packager = Packager(
        store,
        windows=windows,
        masters=masters,
        window_size=window_size,
        registry=registry or Registry(),
    )

    if health is not None:

        async def consuming(sender: Any, *args: Any, **kwargs: Any) -> None:
            # partitions assigned and the tables recovered from their changelogs
            del sender, args, kwargs
            health.ok()

        app.on_rebalance_complete.connect(consuming)  # type: ignore[arg-type]

    @app.agent(segments)
    async def package(stream: Any) -> None:
        # one event at a time: faust acks what take()/take_events() buffer before the batch
        # is processed, so a packager killed mid-batch would lose events (seen in the e2e
        # kill test); one event at a time is acked only after its playlists are written
        async for value in stream:
            try:
                await packager.on_event(value)
            except Exception as exc:
                _exit_unacked(exc, health)

    return app


def _exit_unacked(exc: Exception, health: Health | None) -> NoReturn:
    """An event failed (the store refused a write, say): end the process at once. faust acks
    an event whose agent raised (its stream's `finally`) and would commit it with the next
    batch, losing it; a process that exits here has not acked it, so the restarted packager
    takes it again from the committed offset."""
    logger.critical("packager: an event failed (%s); exiting unacked", exc, exc_info=exc)
    if health is not None:
        health.failed(f"an event failed: {exc}")
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE; the supervisor restarts the role


def run_worker(
    app: faust.App,
    bootstrap: str,
    loglevel: str = "warn",
    *,
    replication: int = 1,
    health: Health | None = None,
) -> None:
    """Run the faust worker in this process until SIGINT/SIGTERM.

    Before faust starts, everything it needs is made ready on the broker: the changelog
    topics created and led (faust creating them itself on a new broker crashed the agent
    with PartitionsMismatch on the first event, losing events), onair.segments led, the
    group coordinator answering; then the group is pinned at the live edge."""
    from faust.worker import Worker

    app_id = app.conf.id
    on_wait = health.starting if health is not None else None
    changelogs = packager_changelogs(app_id, app.conf.topic_partitions)
    if on_wait is not None:
        on_wait("creating the changelog topics")
    ensure_topics(bootstrap, changelogs, replication)
    wait_for_topics(
        bootstrap, [SEGMENTS, *(c.name for c in changelogs)], group=app_id, on_wait=on_wait
    )
    if on_wait is not None:
        on_wait("joining the group and recovering the tables")
    pin_group_to_end(bootstrap, app_id, SEGMENTS)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # no terminal animation in log files
    worker.execute_from_commandline()
