from __future__ import annotations

from pathlib import Path

import pytest

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
    ["", "720p", "720p60", "720p60:4500,720p60:4500", "abc:1"],
    ids=["empty", "no-fps", "no-rate", "twice", "garbage"],
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
    ],
    ids=["not-int", "range", "preset", "window", "s3-no-endpoint"],
)
def test_bad_values_name_their_variable(tmp_path: Path, variable: str, value: str) -> None:
    env = {"ONAIR_STATE_DIR": str(tmp_path), variable: value}
    expected = "ONAIR_S3_ENDPOINT" if variable == "ONAIR_STORAGE_URL" else variable
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env(env)


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
