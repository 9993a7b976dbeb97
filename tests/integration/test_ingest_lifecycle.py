"""Ingest's stream lifecycle on the real broker: a title change through the API while a
stream waits out its reconnect grace is not a resume (the stream still ends and becomes a
VOD), and a reconnect on another ingest within the grace still resumes it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.ingest.handler import IngestHandler
from gateway.ingest.leases import LeaseBook
from pipeline.ladder import DEFAULT_LADDER
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.channels import ChannelDirectory
from topics.client import AsyncProducer, CheckedProducer
from topics.specs import STREAMS, all_topics
from topics.table import TableReader

pytestmark = pytest.mark.integration

# the reconnect grace: long enough that the title change these tests make lands inside it on
# a loaded machine (with 1 s, one CI run of 3 saw the stream end, grace over, before the
# StreamInterrupted had been read back and the title produced: no StreamUpdated at all)
GRACE_S = 3.0


@dataclass
class Ingest:
    handler: IngestHandler
    lifecycle: TableReader
    producer: AsyncProducer
    leases: LeaseBook


@pytest.fixture
async def two_ingests(kafka_bootstrap: str) -> AsyncIterator[tuple[Ingest, Ingest, str, str]]:
    ensure_topics(kafka_bootstrap, all_topics())
    channels = ChannelDirectory(kafka_bootstrap)
    await asyncio.to_thread(channels.start)
    name = f"life_{uuid.uuid4().hex[:8]}"
    key = await asyncio.to_thread(channels.create, name)
    assert key is not None
    ingests = []
    for index in range(2):
        lifecycle = TableReader(kafka_bootstrap, STREAMS, None)
        await asyncio.to_thread(lifecycle.start)
        producer = AsyncProducer(kafka_bootstrap)
        leases = LeaseBook(kafka_bootstrap, producer, holder=f"{name}-ingest-{index}")
        await asyncio.to_thread(leases.start)
        handler = IngestHandler(
            producer, channels, DEFAULT_LADDER, leases, reconnect_grace_s=GRACE_S
        )
        await handler.start()
        ingests.append(Ingest(handler, lifecycle, producer, leases))
    try:
        yield ingests[0], ingests[1], name, key
    finally:
        for ingest in ingests:
            await ingest.handler.stop()
            ingest.producer.close()
            ingest.leases.stop()
            ingest.lifecycle.stop()
        channels.stop()


def update_title(bootstrap: str, channel: str, stream_id: str) -> None:
    """What `PATCH /api/channels/<channel>` produces for a live stream."""
    record = {
        "stream_id": stream_id,
        "channel": channel,
        "updated_ms": int(time.time() * 1000),
        "title": "new title",
        "category": None,
    }
    CheckedProducer(bootstrap).send(STREAMS, channel, Codec().encode("StreamUpdated", record))


async def wait_latest(ingest: Ingest, channel: str, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest = ingest.lifecycle.get(channel)
        if latest is not None and latest["_type"] == kind:
            return latest
        await asyncio.sleep(0.05)
    raise AssertionError(f"{channel}: no {kind} (latest {ingest.lifecycle.get(channel)})")


async def test_a_title_change_during_the_grace_does_not_keep_the_stream_open(
    two_ingests: tuple[Ingest, Ingest, str, str], kafka_bootstrap: str
) -> None:
    first, _, channel, key = two_ingests
    await first.handler.start_publish("live", key, "127.0.0.1")
    stream_id = first.handler.streams[channel].stream_id
    await first.handler.disconnected(first.handler.streams[channel], "publisher went away")
    await wait_latest(first, channel, "StreamInterrupted")
    update_title(kafka_bootstrap, channel, stream_id)
    await wait_latest(first, channel, "StreamUpdated")
    ended = await wait_latest(first, channel, "StreamEnded")
    assert ended["stream_id"] == stream_id


async def test_a_reconnect_on_another_ingest_after_a_title_change_resumes(
    two_ingests: tuple[Ingest, Ingest, str, str], kafka_bootstrap: str
) -> None:
    first, second, channel, key = two_ingests
    await first.handler.start_publish("live", key, "127.0.0.1")
    stream_id = first.handler.streams[channel].stream_id
    await first.handler.disconnected(first.handler.streams[channel], "publisher went away")
    await wait_latest(second, channel, "StreamInterrupted")
    update_title(kafka_bootstrap, channel, stream_id)
    await wait_latest(second, channel, "StreamUpdated")
    publication = await second.handler.start_publish("live", key, "127.0.0.1")
    assert publication.state.stream_id == stream_id, "the same stream goes on"
    resumed = await wait_latest(first, channel, "StreamResumed")
    assert resumed["stream_id"] == stream_id
    await asyncio.sleep(GRACE_S + 1.5)  # past the first ingest's end timer
    latest = first.lifecycle.get(channel)
    assert latest is not None and latest["_type"] == "StreamResumed", "nobody ended it"
