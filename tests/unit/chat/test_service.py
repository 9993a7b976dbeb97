"""The chat WebSocket protocol without Kafka: a `ChatService` in its in-process fan-out mode
(`fanout="local"`), driven through Starlette's TestClient."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # Starlette 1.x prefers `httpx2` for its TestClient; the httpx we have works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketTestSession

from gateway.chat.history import HistoryReader
from gateway.chat.service import ChatConfig, ChatService
from pipeline.tokens import issue_token

SECRET = "unit-secret"
ADMIN = {"Authorization": "Bearer unit-admin"}
REPLIES = {"error", "ack", "authed", "pong"}


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    chat = ChatService(
        kafka_bootstrap="unused:9092",
        token_secret=SECRET,
        admin_token="unit-admin",
        config=ChatConfig(fanout="local", coalesce_ms=5),
    )
    app = Starlette(routes=chat.routes(), lifespan=chat.lifespan)
    with TestClient(app) as client:
        yield client


def receive(ws: WebSocketTestSession) -> dict[str, Any]:
    frame = json.loads(ws.receive_text())
    assert isinstance(frame, dict)
    return frame


def connect(http: TestClient, channel: str, user: str | None = None) -> Any:
    ws = http.websocket_connect(f"/chat/{channel}")
    return _Session(ws, user)


class _Session:
    def __init__(self, manager: Any, user: str | None) -> None:
        self.manager = manager
        self.user = user

    def __enter__(self) -> WebSocketTestSession:
        ws: WebSocketTestSession = self.manager.__enter__()
        assert receive(ws)["type"] == "welcome"
        if self.user is not None:
            ws.send_text(json.dumps({"type": "auth", "token": issue_token(SECRET, self.user)}))
            assert receive(ws)["type"] == "authed"
        return ws

    def __exit__(self, *exc: object) -> None:
        self.manager.__exit__(*exc)


def test_send_needs_a_token_then_reaches_every_viewer(http: TestClient) -> None:
    with connect(http, "room") as reader, connect(http, "room", "alice") as alice:
        reader.send_text(json.dumps({"type": "send", "text": "hi"}))
        assert receive(reader)["code"] == "auth_required"
        alice.send_text(json.dumps({"type": "send", "text": " hello\nworld ", "nonce": "n1"}))
        ack = receive(alice)
        assert ack["type"] == "ack" and ack["nonce"] == "n1"
        batch = receive(reader)
        assert batch["type"] == "batch" and batch["channel"] == "room"
        [message] = batch["messages"]
        assert message == {
            "type": "message",
            "id": ack["id"],
            "channel": "room",
            "user": "alice",
            "text": "hello world",
            "ts": ack["ts"],
        }


def test_forged_token_is_refused_and_the_connection_stays(http: TestClient) -> None:
    with connect(http, "room2") as ws:
        forged = issue_token("another-secret", "mallory")
        ws.send_text(json.dumps({"type": "auth", "token": forged, "nonce": "x"}))
        assert receive(ws) == {
            "type": "error",
            "code": "auth_failed",
            "message": "bad token signature",
            "nonce": "x",
        }
        ws.send_text(json.dumps({"type": "ping", "nonce": "p"}))
        assert receive(ws) == {"type": "pong", "nonce": "p"}


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.lists(
        st.one_of(
            st.text(max_size=300),
            st.binary(max_size=300),
            st.dictionaries(
                st.sampled_from(["type", "text", "token", "nonce"]),
                st.one_of(
                    st.sampled_from(["send", "auth", "ping", "batch"]),
                    st.text(max_size=40),
                    st.integers(),
                    st.none(),
                    st.lists(st.integers(), max_size=3),
                ),
            ).map(json.dumps),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_garbage_frames_get_one_reply_each_and_never_close(
    http: TestClient, frames: list[str | bytes]
) -> None:
    with connect(http, "garbage", "fuzzer") as ws:
        for frame in frames:
            if isinstance(frame, bytes):
                ws.send_bytes(frame)
            else:
                ws.send_text(frame)
            reply = receive(ws)
            if reply["type"] == "ack":  # a well-formed send: its batch follows
                assert receive(ws)["type"] == "batch"
            assert reply["type"] in REPLIES, reply
        ws.send_text(json.dumps({"type": "ping", "nonce": "alive"}))
        while (reply := receive(ws))["type"] != "pong":
            assert reply["type"] in {"batch", "notice"}


def test_flood_closes_the_connection(http: TestClient) -> None:
    with connect(http, "flood") as ws:
        for _ in range(60):
            ws.send_text(json.dumps({"type": "ping"}))
        codes = []
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                frame = receive(ws)
                codes.append(frame.get("code"))
        assert "flood" in codes
        assert closed.value.code == 1008


def test_invalid_channel_is_refused_at_the_handshake(http: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect), http.websocket_connect("/chat/-bad"):
        pass


def test_moderation_api_applies_locally_and_needs_the_admin_token(http: TestClient) -> None:
    assert http.post("/api/moderation/mod/ban", json={"user": "eve"}).status_code == 401
    bad = http.post("/api/moderation/mod/timeout", json={"user": "eve"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    assert http.post("/api/moderation/mod/kick", json={}, headers=ADMIN).status_code == 404
    with connect(http, "mod", "eve") as eve, connect(http, "mod") as watcher:
        response = http.post("/api/moderation/mod/ban", json={"user": "Eve"}, headers=ADMIN)
        assert response.status_code == 200
        assert response.json()["action"] == "ban"
        for viewer in (watcher, eve):
            notice = receive(viewer)
            assert notice["code"] == "user_banned" and notice["user"] == "eve"
        eve.send_text(json.dumps({"type": "send", "text": "let me talk"}))
        assert receive(eve)["code"] == "banned"
    state = http.get("/api/moderation/mod").json()
    assert [b["user"] for b in state["bans"]] == ["eve"]


def test_token_endpoint(http: TestClient) -> None:
    assert http.post("/api/users/token", json={"user": "zoe"}).status_code == 401
    assert (
        http.post("/api/users/token", json={"user": "no spaces"}, headers=ADMIN).status_code == 400
    )
    issued = http.post("/api/users/token", json={"user": "Zoe", "ttl_s": 60}, headers=ADMIN)
    assert issued.status_code == 200 and issued.json()["user"] == "zoe"


def test_history_needs_kafka(http: TestClient) -> None:
    assert http.get("/api/chat/room").status_code == 503
    assert http.get("/api/chat/room?limit=5000").status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "since=99999999999999999999",
        "until=99999999999999999999",
        "since=-1",
        "until=9007199254740992",
    ],
    ids=["huge-since", "huge-until", "negative", "past-2**53"],
)
def test_history_times_out_of_range_are_400(http: TestClient, query: str) -> None:
    """With Kafka these reached `TopicPartition` and raised OverflowError: a 500."""
    response = http.get(f"/api/chat/room?{query}")
    assert response.status_code == 400 and response.json()["error"] == "bad_request"


def test_history_offset_lookup_takes_any_time() -> None:
    """Times far outside int64 reach Kafka clamped (`since=99999999999999999999` was an
    OverflowError, a 500)."""
    asked: list[int] = []

    class FakeReader:
        def locate(self, partitions: list[int], start: Any) -> dict[int, Any]:
            asked.append(start.value)
            return {partitions[0]: None}

    for ts_ms in (-(10**20), 10**20):
        HistoryReader._locate(FakeReader(), 0, ts_ms)  # type: ignore[arg-type]
    assert asked == [0, 2**63 - 1]


def test_a_lone_surrogate_in_a_moderation_body_is_refused_and_applies_nothing(
    http: TestClient,
) -> None:
    """`"\\ud800"` parses as JSON but cannot be encoded: the ban must be refused before it is
    applied (it used to be applied, then every GET of the moderation list answered 500)."""
    body = '{"user": "mallory", "reason": "\\ud800"}'
    headers = {**ADMIN, "content-type": "application/json"}
    response = http.post("/api/moderation/surr/ban", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    state = http.get("/api/moderation/surr")
    assert state.status_code == 200
    assert state.json()["bans"] == []


def test_a_lone_surrogate_in_a_frame_is_refused_not_echoed(http: TestClient) -> None:
    with connect(http, "surrws") as ws:
        ws.send_text('{"type": "ping", "nonce": "\\ud800"}')
        reply = receive(ws)
        assert reply["type"] == "error" and reply["code"] == "bad_frame"
        assert "nonce" not in reply
        ws.send_text(json.dumps({"type": "ping", "nonce": "n1"}))
        assert receive(ws) == {"type": "pong", "nonce": "n1"}
