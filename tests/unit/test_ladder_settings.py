from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.origin.hls import RENDITION
from pipeline import settings as settings_module
from pipeline.errors import ConfigError
from pipeline.ladder import DEFAULT_LADDER, Ladder
from pipeline.settings import Settings

LADDER = Ladder.parse(DEFAULT_LADDER)


@pytest.mark.parametrize(
    ("source", "labels"),
    [
        ((1280, 720, 30.0), ["720p30", "480p30", "360p30", "160p30"]),
        ((1920, 1080, 60.0), ["1080p60", "720p60", "480p30", "360p30", "160p30"]),
        ((1280, 720, 60.0), ["720p60", "480p30", "360p30", "160p30"]),
        ((640, 360, 30.0), ["360p30", "160p30"]),
        ((256, 144, 30.0), []),
    ],
    ids=["720p30", "1080p60", "720p60", "360p30", "tiny"],
)
def test_ladder_drops_rungs_above_the_source(
    source: tuple[int, int, float], labels: list[str]
) -> None:
    width, height, fps = source
    assert [r.label(fps) for r in LADDER.for_source(width, height, fps)] == labels


def test_thirty_fps_rungs_halve_sixty() -> None:
    rung = LADDER.get("480p30")
    assert rung.frame_step(60.0) == 2 and rung.output_fps(60.0) == 30.0
    assert rung.frame_step(30.0) == 1
    assert rung.output_size(1920, 1080) == (852, 480)


@pytest.mark.parametrize(
    "spec",
    [
        *("", "720p", "720p60", "720p60:4500,720p60:4500", "abc:1"),
        *("00p00:0", "720p60:0", "0720p60:4500", "720p5:300", "720p60:" + "9" * 5000),
        "\u0667\u0662\u0660p60:4500",
    ],
    ids=[
        *("empty", "no-fps", "no-rate", "twice", "garbage"),
        *("zeros", "zero-rate", "leading-zero", "one-digit-fps", "5000-digit-rate"),
        "arabic-indic-digits",
    ],
)
def test_bad_ladders_name_the_variable(spec: str) -> None:
    with pytest.raises(ConfigError, match="ONAIR_LADDER"):
        Ladder.parse(spec)


def test_defaults_work_without_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path)})
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.http_port == 8080 and settings.rtmp_port == 1935
    assert settings.admin_token and settings.token_secret
    again = Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path)})
    assert again.token_secret == settings.token_secret  # every process agrees
    assert settings.token_secret not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ONAIR_HTTP_PORT", "eighty"),
        ("ONAIR_RTMP_PORT", "70000"),
        ("ONAIR_X264_PRESET", "warp"),
        ("ONAIR_PLAYLIST_WINDOW", "1"),
        ("ONAIR_STORAGE_URL", "s3://bucket"),
        ("ONAIR_SOURCE_PASSTHROUGH", "maybe"),
    ],
    ids=["not-int", "range", "preset", "window", "s3-no-endpoint", "flag"],
)
def test_bad_values_name_their_variable(tmp_path: Path, variable: str, value: str) -> None:
    env = {"ONAIR_STATE_DIR": str(tmp_path), variable: value}
    expected = "ONAIR_S3_ENDPOINT" if variable == "ONAIR_STORAGE_URL" else variable
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env(env)


@pytest.mark.parametrize("given", ["ONAIR_TLS_CERT_FILE", "ONAIR_TLS_KEY_FILE"])
def test_a_certificate_needs_its_key_and_the_key_its_certificate(
    tmp_path: Path, given: str
) -> None:
    with pytest.raises(ConfigError, match=f"{given}: set without ONAIR_TLS_"):
        Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path), given: "/etc/onair/tls.pem"})
    both = {"ONAIR_TLS_CERT_FILE": "c.pem", "ONAIR_TLS_KEY_FILE": "k.pem"}
    settings = Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path), **both})
    assert (settings.tls_cert_file, settings.tls_key_file, settings.https_port) == (
        "c.pem", "k.pem", 8443
    )  # fmt: skip
    assert Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path)}).h2c_port == 8081


@pytest.mark.parametrize(
    ("raw", "on"), [(None, True), ("0", False), ("off", False), ("No", False), ("1", True)]
)
def test_source_passthrough_is_on_unless_turned_off(
    tmp_path: Path, raw: str | None, on: bool
) -> None:
    env = {"ONAIR_STATE_DIR": str(tmp_path)}
    if raw is not None:
        env["ONAIR_SOURCE_PASSTHROUGH"] = raw
    assert Settings.from_env(env).source_passthrough is on


def test_mpeg_ts_segments_are_on_by_default_and_off_only_with_cmaf(tmp_path: Path) -> None:
    env = {"ONAIR_STATE_DIR": str(tmp_path)}
    assert Settings.from_env(env).ts_segments is True
    assert Settings.from_env({**env, "ONAIR_TS_SEGMENTS": "0"}).ts_segments is False
    with pytest.raises(ConfigError, match=r"ONAIR_TS_SEGMENTS.*ONAIR_PART_TARGET_MS"):
        Settings.from_env({**env, "ONAIR_TS_SEGMENTS": "0", "ONAIR_PART_TARGET_MS": "0"})
    assert Settings.from_env({**env, "ONAIR_PART_TARGET_MS": "0"}).ts_segments is True


def test_processes_starting_at_once_agree_on_the_secrets(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env = {"ONAIR_STATE_DIR": str(tmp_path / "fresh")}
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: Settings.from_env(env).token_secret, range(16)))
    assert len(set(found)) == 1
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["secrets"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ONAIR_RTMP_MIN_CHUNK_SIZE", "0"),
        ("ONAIR_RTMP_PREPUBLISH_MAX_BYTES", "100"),
        ("ONAIR_RTMP_PARSE_CPU_SHARE", "nan"),
        ("ONAIR_GOP_MAX_BYTES", str(16 * 1024 * 1024)),  # no room left for the record
        ("ONAIR_GOP_MAX_DURATION_MS", "100"),
        ("ONAIR_CHAT_MAX_MARKS_PER_CHAR", "0"),
    ],
    ids=["chunk-size", "prepublish-bytes", "cpu-nan", "gop-bytes", "gop-duration", "marks"],
)
def test_budgets_are_checked_and_name_their_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path), variable: value})


def test_budgets_are_read_from_the_environment(tmp_path: Path) -> None:
    env = {
        "ONAIR_STATE_DIR": str(tmp_path),
        "ONAIR_RTMP_MAX_MESSAGES_PER_S": "2500",
        "ONAIR_GOP_MAX_BYTES": str(8 * 1024 * 1024),
        "ONAIR_CHAT_MAX_MARKS_PER_CHAR": "2",
    }
    settings = Settings.from_env(env)
    assert settings.rtmp_max_messages_per_s == 2500.0
    assert settings.gop_max_bytes == 8 * 1024 * 1024
    assert settings.chat_max_marks_per_char == 2


# -- fuzzed: operator text (not outside bytes, but a typo must be a ConfigError, not a crash) --

VARIABLES = sorted(
    set(re.findall(r'"(ONAIR_[A-Z0-9_]+)"', Path(settings_module.__file__).read_text()))
    - {"ONAIR_STATE_DIR", "ONAIR_ADMIN_TOKEN", "ONAIR_TOKEN_SECRET"}  # no secrets file written
)
numberish = st.one_of(
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", " 1 ", "1_000", "\u0661\u0662", "0x10", "1e999", "-0", "9" * 5000]),
)
rung = st.tuples(
    st.from_regex(r"[0-9]{1,5}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    st.one_of(st.from_regex(r"[0-9]{0,8}", fullmatch=True), st.just("9" * 5000)),
).map(lambda t: f"{t[0]}p{t[1]}:{t[2]}")
ladders = st.one_of(st.lists(rung, min_size=1, max_size=4).map(",".join), st.text(max_size=40))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(VARIABLES), st.one_of(numberish, st.text(max_size=30), ladders))
def test_any_value_is_taken_or_refused_naming_its_variable(variable: str, raw: str) -> None:
    env = {"ONAIR_ADMIN_TOKEN": "a", "ONAIR_TOKEN_SECRET": "s", variable: raw}
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        assert exc.variable in (variable, "ONAIR_S3_ENDPOINT")


@settings(max_examples=100, deadline=None)
@given(ladders)
def test_a_ladder_that_parses_can_be_served_and_encoded(spec: str) -> None:
    """Every rung's name is one the origin serves (`gateway/origin/hls.py` RENDITION), its
    numbers are ones an encoder takes, and the ladder reads back from its own names."""
    try:
        ladder = Ladder.parse(spec)
    except ConfigError as exc:
        assert exc.variable == "ONAIR_LADDER"
        return
    for r in ladder.rungs:
        assert RENDITION.fullmatch(r.name), r.name
        assert r.height >= 2 and r.fps >= 1 and 0 < r.bitrate_bps <= 1_000_000_000
        assert r.output_fps(60.0) > 0 and r.output_size(1920, 1080)[1] > 0
    again = ",".join(f"{r.name}:{r.bitrate_bps // 1000}" for r in ladder.rungs)
    assert Ladder.parse(again) == ladder


def test_input_limits_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ONAIR_CHAT_MAX_TEXT_CHARS": "200",
            "ONAIR_CHAT_MAX_FRAME_CHARS": "4096",
            "ONAIR_CHAT_FRAMES_PER_S": "5",
            "ONAIR_HTTP_MAX_BODY_BYTES": "2048",
        }
    )
    assert (settings.chat_max_text_chars, settings.chat_max_frame_chars) == (200, 4096)
    assert (settings.chat_frames_per_s, settings.http_max_body_bytes) == (5.0, 2048)
    with pytest.raises(ConfigError, match="ONAIR_HTTP_MAX_BODY_BYTES"):
        Settings.from_env({"ONAIR_HTTP_MAX_BODY_BYTES": "10"})


@pytest.mark.parametrize(
    ("env", "ttl_s", "renew_s"),
    [
        ({}, 30.0, 3.0),
        ({"ONAIR_INGEST_LEASE_TTL_S": "6"}, 6.0, 0.6),
        ({"ONAIR_INGEST_LEASE_TTL_S": "6", "ONAIR_INGEST_LEASE_RENEW_S": "2"}, 6.0, 2.0),
    ],
    ids=["defaults", "renewals-follow-the-ttl", "both"],
)
def test_ingest_lease_timings(
    tmp_path: Path, env: dict[str, str], ttl_s: float, renew_s: float
) -> None:
    settings = Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path), **env})
    assert (settings.ingest_lease_ttl_s, settings.ingest_lease_renew_s) == (ttl_s, renew_s)


def test_ingest_lease_renewals_must_come_three_times_a_ttl(tmp_path: Path) -> None:
    env = {"ONAIR_INGEST_LEASE_TTL_S": "6", "ONAIR_INGEST_LEASE_RENEW_S": "2.5"}
    with pytest.raises(ConfigError, match="ONAIR_INGEST_LEASE_RENEW_S"):
        Settings.from_env({"ONAIR_STATE_DIR": str(tmp_path), **env})


def test_a_zero_auth_block_is_a_config_error_not_a_crash_at_ingest_start() -> None:
    """AuthGuard needs a positive block; Settings used to take 0 and ingest then died with a
    ValueError at start."""
    with pytest.raises(ConfigError, match="ONAIR_AUTH_BLOCK_S"):
        Settings.from_env({"ONAIR_AUTH_BLOCK_S": "0"})
    assert Settings.from_env({"ONAIR_AUTH_BLOCK_S": "1"}).auth_block_s == 1.0
