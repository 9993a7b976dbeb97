"""Fan-out pieces without Kafka: bounded outboxes, coalescing."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.chat.fanout import ClientOutbox, FanoutHub, OutboxLimits


class Viewer:
    """Records frames; `gate` (when cleared) makes sends block like a full socket."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: str) -> None:
        await self.gate.wait()
        self.frames.append(json.loads(frame))

    def messages(self) -> list[object]:
        out: list[object] = []
        for frame in self.frames:
            if frame["type"] == "batch":
                out.extend(m["text"] for m in frame["messages"])  # type: ignore[attr-defined]
        return out


def _message(text: str) -> str:
    return json.dumps({"type": "message", "text": text})


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_hub_coalesces_per_channel_and_keeps_order() -> None:
    hub = FanoutHub(coalesce_s=0.02)
    viewer = Viewer()
    outbox = ClientOutbox(viewer.send, OutboxLimits())
    writer = asyncio.create_task(outbox.run())
    await hub.join("c", outbox)
    for i in range(5):
        hub.publish("c", _message(f"m{i}"))
    hub.publish("nobody-watches", _message("x"))
    await asyncio.sleep(0.05)
    assert [f["type"] for f in viewer.frames] == ["batch"]
    assert viewer.messages() == ["m0", "m1", "m2", "m3", "m4"]
    hub.publish("c", _message("m5"))
    await asyncio.sleep(0.05)
    assert viewer.messages()[-1] == "m5" and len(viewer.frames) == 2
    hub.leave("c", outbox)
    outbox.stop()
    await writer


async def test_slow_viewer_loses_oldest_and_is_told_without_delaying_others() -> None:
    hub = FanoutHub(coalesce_s=0.001)
    fast, slow = Viewer(), Viewer()
    limits = OutboxLimits(max_queued_messages=10, max_dropped=1000)
    fast_box, slow_box = ClientOutbox(fast.send, limits), ClientOutbox(slow.send, limits)
    tasks = [asyncio.create_task(fast_box.run()), asyncio.create_task(slow_box.run())]
    await hub.join("c", fast_box)
    await hub.join("c", slow_box)
    slow.gate.clear()
    for i in range(30):
        hub.publish("c", _message(f"m{i}"))
        hub.flush()
        await _settle()
    assert fast.messages() == [f"m{i}" for i in range(30)]
    slow.gate.set()
    await _settle()
    notices = [f for f in slow.frames if f["type"] == "notice"]
    assert notices and notices[0]["code"] == "messages_dropped"
    got = slow.messages()
    assert got[-10:] == [f"m{i}" for i in range(20, 30)]  # the newest survive, in order
    assert len(got) + int(notices[0]["count"]) == 30  # type: ignore[call-overload]
    assert not slow_box.closed
    for box in (fast_box, slow_box):
        box.stop()
    await asyncio.gather(*tasks)


async def test_too_many_drops_disconnect_with_a_reason() -> None:
    viewer = Viewer()
    viewer.gate.clear()
    outbox = ClientOutbox(viewer.send, OutboxLimits(max_queued_messages=5, max_dropped=20))
    writer = asyncio.create_task(outbox.run())
    for i in range(40):
        outbox.push_batch(_message(f"m{i}"), 1)
    assert outbox.closed and outbox.close_reason is not None
    assert "too slow" in outbox.close_reason
    assert outbox.finished.done()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_stalled_send_fails_the_outbox() -> None:
    viewer = Viewer()
    viewer.gate.clear()
    outbox = ClientOutbox(viewer.send, OutboxLimits(send_timeout_s=1.0))
    writer = asyncio.create_task(outbox.run())
    outbox.push_control('{"type":"pong"}')
    await _settle()
    loop = asyncio.get_running_loop()
    assert not outbox.check_stalled(loop.time())
    assert outbox.check_stalled(loop.time() + 2.0)
    assert outbox.close_reason == "too slow: send stalled"
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_control_frames_are_never_dropped_but_bounded() -> None:
    viewer = Viewer()
    viewer.gate.clear()
    limits = OutboxLimits(max_queued_messages=2, max_control_frames=3)
    outbox = ClientOutbox(viewer.send, limits)
    outbox.push_control('{"type":"ack","n":1}')
    for i in range(5):
        outbox.push_batch(_message(f"m{i}"), 1)
    outbox.push_control('{"type":"ack","n":2}')
    writer = asyncio.create_task(outbox.run())
    viewer.gate.set()
    await _settle()
    kinds = [f["type"] for f in viewer.frames]
    assert kinds.count("ack") == 2
    outbox.push_control("{}")
    outbox.push_control("{}")
    outbox.push_control("{}")
    viewer.gate.clear()
    await _settle()
    outbox.push_control("{}")
    outbox.push_control("{}")
    outbox.push_control("{}")
    assert outbox.close_reason == "too slow: replies not read"
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
