from __future__ import annotations

import itertools

import pytest

from gateway.rtmp import amf0
from gateway.rtmp.chunk import Message, MessageType
from gateway.rtmp.limits import RtmpLimits
from gateway.rtmp.session import (
    ConfigReady,
    Event,
    Media,
    Metadata,
    PublishEnded,
    PublishRequested,
    RtmpSession,
    SessionState,
)
from pipeline.errors import AmfError, BudgetExceeded, ProtocolError
from pipeline.media import Track
from tests.unit.rtmp.conftest import Capture
from tests.unit.rtmp.rtmp_client import TestPublisher
from tests.unit.rtmp.samples import (
    aac_frame_tag,
    aac_header_tag,
    avc_frame_tag,
    avc_header_tag,
)

S0S1S2 = 1 + 2 * 1536


def start(
    key: str = "secret-key", app: str = "live"
) -> tuple[RtmpSession, TestPublisher, list[list[amf0.AmfValue]], list[Event]]:
    """A session fed a whole preamble, up to the pending publish decision."""
    session, client = RtmpSession(), TestPublisher()
    out, events = session.feed(client.preamble(key, app))
    assert len(out) > S0S1S2
    return session, client, client.read_commands(out[S0S1S2:]), events


def state_of(session: RtmpSession) -> SessionState:
    return session.state  # through a call, so mypy does not pin the state it saw last


def publishing(key: str = "secret-key") -> tuple[RtmpSession, TestPublisher]:
    session, client, _, _ = start(key)
    session.accept_publish()
    return session, client


def statuses(client: TestPublisher, out: bytes) -> list[dict[str, amf0.AmfValue]]:
    found = []
    for values in client.read_commands(out):
        if values[0] in ("onStatus", "_error"):
            info = values[3]
            assert isinstance(info, dict)
            found.append(info)
    return found


def test_connect_and_publish_handshake_with_answers() -> None:
    session, client, commands, events = start("secret-key?token=xyz")
    names = [c[0] for c in commands]
    assert names == [
        "_result",
        "_result",
        "_result",
        "_result",
    ]  # connect, release, FCPublish, create
    connect = commands[0]
    assert connect[1] == 1.0
    info = connect[3]
    assert isinstance(info, dict) and info["code"] == "NetConnection.Connect.Success"
    assert commands[3][3] == 1.0  # createStream's stream id
    assert client.reader.chunk_size == 4096  # our Set Chunk Size was applied
    assert events == [PublishRequested("live", "secret-key")]  # the ?query is not the key
    assert "secret-key" not in repr(events)
    assert state_of(session) is SessionState.PUBLISH_PENDING

    out, more = session.accept_publish()
    assert more == []
    assert statuses(client, out) == [
        {"level": "status", "code": "NetStream.Publish.Start", "description": "Publishing started."}
    ]
    assert session.state is SessionState.PUBLISHING


def test_media_metadata_and_unpublish() -> None:
    session, client = publishing()
    wire = (
        client.metadata({"framerate": 30.0, "width": 640.0})
        + client.video(0, avc_header_tag())
        + client.audio(0, aac_header_tag())
        + client.video(0, avc_frame_tag(True))
        + client.audio(10, aac_frame_tag())
        + client.video(33, avc_frame_tag(False, 33))
        + client.unpublish("secret-key")
    )
    _, events = session.feed(wire)
    assert [type(e).__name__ for e in events] == [
        "Metadata",
        "ConfigReady",
        "Media",
        "Media",
        "Media",
        "PublishEnded",
    ]
    assert events[0] == Metadata({"framerate": 30.0, "width": 640.0})
    config = events[1]
    assert isinstance(config, ConfigReady)
    assert (config.config.width, config.config.fps, config.config.audio_sample_rate) == (
        640,
        30.0,
        48000,
    )
    last = events[4]
    assert isinstance(last, Media) and last.unit.pts_90k == 66 * 90
    assert events[-1] == PublishEnded("unpublished")
    assert session.state is SessionState.CONNECTED


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("Wrong stream key.",), "NetStream.Publish.BadName"),
        (("Channel is banned.", "NetStream.Publish.Denied"), "NetStream.Publish.Denied"),
    ],
    ids=["default-code", "given-code"],
)
def test_refused_publish_sends_an_error_status_and_closes(args: tuple[str, ...], code: str) -> None:
    session, client, _, _ = start()
    out = session.refuse_publish(*args)
    assert statuses(client, out) == [{"level": "error", "code": code, "description": args[0]}]
    assert session.closing
    assert session.feed(client.video(0, avc_header_tag())) == (b"", [])


@pytest.mark.parametrize(
    "app", ["other", "live/secret-key", ""], ids=["other", "key-in-app", "empty"]
)
def test_unknown_app_is_rejected_without_echoing_it(app: str) -> None:
    session, client = RtmpSession(), TestPublisher()
    out, events = session.feed(client.handshake() + client.connect(app) + client.publish("k"))
    assert events == []
    assert session.closing
    rejected = statuses(client, out[S0S1S2:])
    assert rejected == [
        {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": "Unknown application.",
        }
    ]
    assert b"secret-key" not in out


def test_app_with_query_and_slash_is_live() -> None:
    session, client = RtmpSession(), TestPublisher()
    session.feed(client.handshake() + client.connect("live/?foo=bar"))
    assert session.state is SessionState.CONNECTED


def test_play_is_refused() -> None:
    session, client = RtmpSession(), TestPublisher()
    wire = client.handshake() + client.connect() + client.command("play", None, "k", stream_id=1)
    out, _ = session.feed(wire)
    assert statuses(client, out[S0S1S2:])[-1]["code"] == "NetStream.Play.Failed"
    assert session.closing


def test_messages_sent_before_the_decision_run_after_accept() -> None:
    session, client = RtmpSession(), TestPublisher()
    wire = (
        client.preamble("k")
        + client.metadata({"framerate": 25.0})
        + client.video(0, avc_header_tag())
        + client.video(0, avc_frame_tag(True))
    )
    _, events = session.feed(wire)
    assert [type(e) for e in events] == [PublishRequested]
    _, events = session.accept_publish()
    assert [type(e) for e in events] == [Metadata, ConfigReady, Media]


def test_too_much_before_the_decision_is_an_error() -> None:
    session, client, _, _ = start()
    with pytest.raises(ProtocolError, match="before the publish was accepted"):
        session.feed(b"".join(client.audio(i, aac_frame_tag()) for i in range(300)))


def test_media_before_publish_is_ignored() -> None:
    session, client = RtmpSession(), TestPublisher()
    _, events = session.feed(
        client.handshake() + client.connect() + client.video(0, avc_header_tag())
    )
    assert events == []


def test_second_publish_on_a_publishing_connection_is_refused_alone() -> None:
    session, client = publishing()
    out, events = session.feed(client.command("publish", None, "other", "live", stream_id=1))
    assert events == []
    assert statuses(client, out)[0]["level"] == "error"
    assert session.state is SessionState.PUBLISHING


def test_republish_after_unpublish_asks_again() -> None:
    session, client = publishing()
    session.feed(client.unpublish("k"))
    _, events = session.feed(client.command("publish", None, "k2", "live", stream_id=1))
    assert events == [PublishRequested("live", "k2")]


def test_disconnect_flushes_and_ends_the_publish() -> None:
    session, client = publishing()
    session.feed(client.video(0, avc_header_tag()) + client.video(0, avc_frame_tag(True)))
    events = session.connection_lost()
    assert [type(e) for e in events] == [ConfigReady, Media, PublishEnded]
    assert events[-1] == PublishEnded("disconnected")
    assert session.connection_lost() == []


def test_amf3_command_with_format_byte() -> None:
    session, client = RtmpSession(), TestPublisher()
    payload = b"\x00" + amf0.encode("connect", 1.0, {"app": "live"})
    wire = client.handshake() + client.writer.write(
        Message(MessageType.COMMAND_AMF3, 0, 0, payload, 3)
    )
    session.feed(wire)
    assert session.state is SessionState.CONNECTED


@pytest.mark.parametrize(
    ("wire_after_handshake", "error", "match"),
    [
        (lambda c: c.command("publish", None, "k"), ProtocolError, "before connect"),
        (lambda c: c.connect() + c.connect(), ProtocolError, "connected session"),
        (
            lambda c: c.writer.write(Message(MessageType.COMMAND_AMF0, 0, 0, amf0.encode(1.0), 3)),
            AmfError,
            "command name",
        ),
        (
            lambda c: c.writer.write(
                Message(MessageType.COMMAND_AMF0, 0, 0, b"\x02\x00\x09conn", 3)
            ),
            AmfError,
            "truncated",
        ),
    ],
    ids=["publish-before-connect", "connect-twice", "nameless-command", "garbled-command"],
)
def test_protocol_violations(
    wire_after_handshake: object, error: type[Exception], match: str
) -> None:
    session, client = RtmpSession(), TestPublisher()
    assert callable(wire_after_handshake)
    with pytest.raises(error, match=match):
        session.feed(client.handshake() + wire_after_handshake(client))


def run_capture(capture: Capture, piece: int = 4096) -> list[Event]:
    session = RtmpSession()
    events: list[Event] = []
    data = capture.client_bytes
    for i in range(0, len(data), piece):
        _, new = session.feed(data[i : i + piece])
        events += new
        if any(isinstance(e, PublishRequested) for e in new):
            events += session.accept_publish()[1]
    return events + session.connection_lost()


def test_replays_a_real_ffmpeg_publish(ffmpeg_capture: Capture) -> None:
    events = run_capture(ffmpeg_capture)
    assert events[0] == PublishRequested("live", "capture-key")
    metadata = [e for e in events if isinstance(e, Metadata)]
    assert len(metadata) == 1 and metadata[0].metadata["framerate"] == 30.0
    configs = [e.config for e in events if isinstance(e, ConfigReady)]
    assert len(configs) == 1
    config = configs[0]
    assert (config.width, config.height, config.fps) == (640, 360, 30.0)
    assert (config.audio_sample_rate, config.audio_channels) == (48000, 1)
    units = [e.unit for e in events if isinstance(e, Media)]
    video = [u for u in units if u.track is Track.VIDEO]
    assert len(video) == 60 and video[0].keyframe
    assert sum(u.keyframe for u in video) == 1  # -g 60 over 2 s
    assert len([u for u in units if u.track is Track.AUDIO]) > 80
    assert isinstance(events[-1], PublishEnded) and events[-1].reason == "unpublished"


@pytest.mark.parametrize("fixture", ["extended_timestamp_capture", "wrapping_capture"])
def test_replays_ffmpeg_with_large_and_wrapping_timestamps(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    capture: Capture = request.getfixturevalue(fixture)
    events = run_capture(capture, piece=1000)
    video = [e.unit for e in events if isinstance(e, Media) and e.unit.track is Track.VIDEO]
    dts = [u.dts_90k for u in video]
    assert dts == sorted(set(dts))
    assert all(b - a in (2970, 3060) for a, b in itertools.pairwise(dts))  # 33/34 ms
    assert dts[0] > 16_000_000 * 90
    assert all(u.pts_90k >= u.dts_90k for u in video)


def test_data_messages_before_publish_are_not_decoded() -> None:
    """AMF0 data before connect used to be decoded in full, then ignored (256 KiB: 349 ms)."""
    session, client = RtmpSession(), TestPublisher()
    garbage = client.writer.write(Message(MessageType.DATA_AMF0, 0, 0, b"\x02\x00\x09conn", 4))
    _, events = session.feed(client.handshake() + garbage + client.connect())
    assert events == [] and session.state is SessionState.CONNECTED  # not an AmfError


@pytest.mark.parametrize(
    ("limits", "wire", "match"),
    [
        (
            RtmpLimits(prepublish_max_bytes=8192),
            lambda c: c.handshake() + c.connect() + c.metadata({"pad": "x" * 6000}),
            "more than 8192 bytes before the publish was accepted",
        ),
        (
            RtmpLimits(prepublish_max_messages=16),
            lambda c: (
                c.handshake() + c.connect() + b"".join(c.command("_checkbw") for _ in range(20))
            ),
            "more than 16 messages before the publish was accepted",
        ),
    ],
    ids=["bytes", "messages"],
)
def test_anonymous_connections_have_a_budget(limits: RtmpLimits, wire: object, match: str) -> None:
    session, client = RtmpSession(limits=limits), TestPublisher()
    assert callable(wire)
    with pytest.raises(BudgetExceeded, match=match):
        session.feed(wire(client))


def test_real_clients_fit_the_anonymous_budget(ffmpeg_capture: Capture) -> None:
    """ffmpeg's whole preamble, handshake included, is far within the defaults."""
    limits = RtmpLimits()
    session = RtmpSession(limits=limits)
    data = ffmpeg_capture.client_bytes
    for i in range(0, len(data), 256):
        _, events = session.feed(data[i : i + 256])
        if events:
            break
    assert events == [PublishRequested("live", "capture-key")]
    assert i + 256 < limits.prepublish_max_bytes / 8
    assert session._chunks.reader.messages_total < limits.prepublish_max_messages / 8


def test_messages_a_second_are_metered_after_the_publish() -> None:
    now = [100.0]
    session = RtmpSession(limits=RtmpLimits(max_messages_per_s=100), clock=lambda: now[0])
    client = TestPublisher()
    session.feed(client.preamble("k"))
    session.accept_publish()
    audio = client.audio(0, aac_header_tag())
    session.feed(audio * 150)  # within the burst of two seconds' worth
    now[0] += 0.5
    session.feed(audio * 90)  # 50 + 50 refilled
    with pytest.raises(BudgetExceeded, match="more than 100 messages a second"):
        session.feed(audio * 20)
