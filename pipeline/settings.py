"""One frozen `Settings`, read from `ONAIR_*` environment variables.

Only entry points (the CLI, the all-in-one runner) call `Settings.from_env()`; components take
plain values. Every default works on one machine: `onair up` with no environment is the demo.
A bad value raises `ConfigError` naming the variable.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError
from pipeline.ladder import DEFAULT_LADDER, Ladder

N = TypeVar("N", int, float)
KIB = 1024
MIB = 1024 * KIB
GOP_BYTES_CEILING = 15 * MIB  # the GOP topic takes 16 MiB a message: room for the record around
LEASE_TTL_S = 30.0  # above a broker failover (KRaft fences a dead broker after 9 s)
LEASE_RENEW_S = LEASE_TTL_S / 10


def _number(name: str, raw: str, low: N, high: N, kind: type[N]) -> N:
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(name, f"{raw!r} is not {noun}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is outside {low}..{high}")
    return value


def _int(name: str, raw: str, low: int, high: int) -> int:
    return _number(name, raw, low, high, int)


def _float(name: str, raw: str, low: float, high: float) -> float:
    return _number(name, raw, low, high, float)


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    storage_url: str = ".onair/store"  # a directory, or s3://bucket[/prefix]
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    state_dir: str = ".onair"
    public_host: str = "localhost"
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    # HTTP/2 beside it (gateway/http/listen.py): h2c on h2c_port (0 = off), and h2 over TLS on
    # https_port when both tls_cert_file and tls_key_file (PEM) are set
    h2c_port: int = 8081
    https_port: int = 8443
    tls_cert_file: str = ""
    tls_key_file: str = ""
    rtmp_host: str = "0.0.0.0"
    rtmp_port: int = 1935
    ladder: Ladder = field(default_factory=lambda: Ladder.parse(DEFAULT_LADDER))
    x264_preset: str = "veryfast"
    # a rung at the source's own size and frame rate carries the source's H.264 unchanged
    # (Twitch's "Source"); off: every rung is re-encoded at its bitrate
    source_passthrough: bool = True
    playlist_window: int = 6
    partitions: int = 6
    replication: int = 1
    replay_retention_hours: int = 48
    reconnect_grace_s: float = 5.0
    # an ingest holds each stream's channel with a lease in onair.ingest.leases: it lapses this
    # long after the last renewal (another ingest then ends or resumes the stream); renewed
    # every ingest_lease_renew_s (at most a third of the TTL; unset, a tenth of it)
    ingest_lease_ttl_s: float = LEASE_TTL_S
    ingest_lease_renew_s: float = LEASE_RENEW_S
    # ingest sends each GOP in parts this long, so workers encode while it arrives; half the
    # LL part target, so a part's last frame reaches the worker at most that late
    gop_part_ms: int = 100
    # low-latency HLS: CMAF parts of at most this long (EXT-X-PART-INF:PART-TARGET; players
    # hold back three of them); 0 = MPEG-TS segments only
    part_target_ms: int = 200
    # every segment also as MPEG-TS (the classic playlists list it); off: the classic
    # playlists list the CMAF segments (fMP4), one copy of each segment in the store
    ts_segments: bool = True
    # the GOP length publishers are asked for (keyframe interval): EXT-X-TARGETDURATION
    segment_target_s: int = 2
    ll_playlist_window: int = 15  # segments an LL playlist lists (delta updates skip most)
    admin_token: str = ""
    token_secret: str = ""
    metrics_port: int = 0  # workers' /metrics; 0 = a free port is not opened
    # `onair up`: each role's /metrics and /healthz on a port from here (ingest, package, vod
    # at base, +1, +2; transcode rung i at base + 9 + i)
    up_metrics_port_base: int = 9101
    group_prefix: str = "onair"  # consumer groups: <prefix>.transcode.<rung>, <prefix>-packager
    auth_max_failures: int = 5
    auth_block_s: float = 300.0
    # what one RTMP connection may spend (gateway/rtmp/limits.py says what each protects)
    rtmp_min_chunk_size: int = 128  # the protocol's default; OBS and ffmpeg send 4096
    rtmp_prepublish_max_bytes: int = 64 * KIB  # before a publish is accepted, handshake included
    rtmp_prepublish_max_messages: int = 128
    rtmp_max_messages_per_s: float = 1000.0  # after the publish; burst: two seconds' worth
    rtmp_parse_slice_bytes: int = 16 * KIB  # parsed between two yields to the event loop
    rtmp_parse_cpu_share: float = 0.25  # of one core, sustained (burst: 1 s of CPU)
    # a GOP without a next keyframe is closed at these bounds (and the stream waits for a
    # keyframe): memory per publisher, and the whole GOP stays within the topic's 16 MiB
    gop_max_duration_ms: int = 20_000
    gop_max_bytes: int = 12 * MIB
    chat_max_marks_per_char: int = 4  # combining marks kept on one base character
    chat_max_text_chars: int = 500  # a chat message, after normalisation
    chat_max_frame_chars: int = 16 * KIB  # a WebSocket text frame (bigger: frame_too_large)
    chat_frames_per_s: float = 20.0  # inbound frames per connection (burst: twice that)
    http_max_body_bytes: int = 16 * KIB  # a REST or chat API request body (bigger: 413)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def take(name: str, key: str, parse: Callable[[str, str], Any]) -> None:
            raw = env.get(name)
            if raw is not None and raw != "":
                values[key] = parse(name, raw)

        take("ONAIR_KAFKA_BOOTSTRAP", "kafka_bootstrap", lambda n, r: r)
        take("ONAIR_STORAGE_URL", "storage_url", lambda n, r: r)
        take("ONAIR_S3_ENDPOINT", "s3_endpoint", lambda n, r: r)
        take("ONAIR_S3_ACCESS_KEY", "s3_access_key", lambda n, r: r)
        take("ONAIR_S3_SECRET_KEY", "s3_secret_key", lambda n, r: r)
        take("ONAIR_S3_REGION", "s3_region", lambda n, r: r)
        take("ONAIR_STATE_DIR", "state_dir", lambda n, r: r)
        take("ONAIR_PUBLIC_HOST", "public_host", lambda n, r: r)
        take("ONAIR_HTTP_HOST", "http_host", lambda n, r: r)
        take("ONAIR_HTTP_PORT", "http_port", lambda n, r: _int(n, r, 0, 65535))
        take("ONAIR_H2C_PORT", "h2c_port", lambda n, r: _int(n, r, 0, 65535))
        take("ONAIR_HTTPS_PORT", "https_port", lambda n, r: _int(n, r, 1, 65535))
        take("ONAIR_TLS_CERT_FILE", "tls_cert_file", lambda n, r: r)
        take("ONAIR_TLS_KEY_FILE", "tls_key_file", lambda n, r: r)
        if bool(values.get("tls_cert_file")) != bool(values.get("tls_key_file")):
            given, missing = ("ONAIR_TLS_CERT_FILE", "ONAIR_TLS_KEY_FILE")[
                :: 1 if values.get("tls_cert_file") else -1
            ]
            raise ConfigError(given, f"set without {missing}: HTTPS needs both")
        take("ONAIR_RTMP_HOST", "rtmp_host", lambda n, r: r)
        take("ONAIR_RTMP_PORT", "rtmp_port", lambda n, r: _int(n, r, 0, 65535))
        take("ONAIR_LADDER", "ladder", lambda n, r: Ladder.parse(r, n))
        take("ONAIR_X264_PRESET", "x264_preset", _preset)
        take("ONAIR_SOURCE_PASSTHROUGH", "source_passthrough", _flag)
        take("ONAIR_PLAYLIST_WINDOW", "playlist_window", lambda n, r: _int(n, r, 3, 1000))
        take("ONAIR_PARTITIONS", "partitions", lambda n, r: _int(n, r, 1, 1024))
        take("ONAIR_REPLICATION", "replication", lambda n, r: _int(n, r, 1, 7))
        take("ONAIR_REPLAY_RETENTION_HOURS", "replay_retention_hours", _hours)
        take("ONAIR_GOP_PART_MS", "gop_part_ms", lambda n, r: _int(n, r, 0, 10_000))
        take("ONAIR_SEGMENT_TARGET_S", "segment_target_s", lambda n, r: _int(n, r, 1, 20))
        take("ONAIR_LL_PLAYLIST_WINDOW", "ll_playlist_window", lambda n, r: _int(n, r, 6, 1000))
        take("ONAIR_PART_TARGET_MS", "part_target_ms", lambda n, r: _int(n, r, 0, 5_000))
        take("ONAIR_TS_SEGMENTS", "ts_segments", _flag)
        if values.get("ts_segments") is False and values.get("part_target_ms", 1) == 0:
            raise ConfigError(
                "ONAIR_TS_SEGMENTS", "0 needs CMAF segments: ONAIR_PART_TARGET_MS must be > 0"
            )
        take("ONAIR_RECONNECT_GRACE_S", "reconnect_grace_s", lambda n, r: _float(n, r, 0, 600))
        take("ONAIR_INGEST_LEASE_TTL_S", "ingest_lease_ttl_s", lambda n, r: _float(n, r, 2, 600))
        take(
            "ONAIR_INGEST_LEASE_RENEW_S",
            "ingest_lease_renew_s",
            lambda n, r: _float(n, r, 0.1, 200),
        )
        ttl_s = values.get("ingest_lease_ttl_s", LEASE_TTL_S)
        values.setdefault("ingest_lease_renew_s", ttl_s / 10)  # unset: follows the TTL
        if values["ingest_lease_renew_s"] > ttl_s / 3:
            raise ConfigError(
                "ONAIR_INGEST_LEASE_RENEW_S",
                f"must be at most a third of the lease TTL ({ttl_s} s)",
            )
        take("ONAIR_ADMIN_TOKEN", "admin_token", lambda n, r: r)
        take("ONAIR_TOKEN_SECRET", "token_secret", lambda n, r: r)
        take("ONAIR_METRICS_PORT", "metrics_port", lambda n, r: _int(n, r, 0, 65535))
        take(
            "ONAIR_UP_METRICS_PORT_BASE", "up_metrics_port_base", lambda n, r: _int(n, r, 1, 65000)
        )
        take("ONAIR_GROUP_PREFIX", "group_prefix", _group_prefix)
        take("ONAIR_AUTH_MAX_FAILURES", "auth_max_failures", lambda n, r: _int(n, r, 1, 1000))
        take("ONAIR_AUTH_BLOCK_S", "auth_block_s", lambda n, r: _float(n, r, 1, 86400))
        take("ONAIR_RTMP_MIN_CHUNK_SIZE", "rtmp_min_chunk_size", lambda n, r: _int(n, r, 1, 4096))
        take(
            "ONAIR_RTMP_PREPUBLISH_MAX_BYTES",
            "rtmp_prepublish_max_bytes",
            lambda n, r: _int(n, r, 4 * KIB, 16 * MIB),
        )
        take(
            "ONAIR_RTMP_PREPUBLISH_MAX_MESSAGES",
            "rtmp_prepublish_max_messages",
            lambda n, r: _int(n, r, 16, 100_000),
        )
        take(
            "ONAIR_RTMP_MAX_MESSAGES_PER_S",
            "rtmp_max_messages_per_s",
            lambda n, r: _float(n, r, 100, 1_000_000),
        )
        take(
            "ONAIR_RTMP_PARSE_SLICE_BYTES",
            "rtmp_parse_slice_bytes",
            lambda n, r: _int(n, r, 1 * KIB, 1 * MIB),
        )
        take(
            "ONAIR_RTMP_PARSE_CPU_SHARE", "rtmp_parse_cpu_share", lambda n, r: _float(n, r, 0.01, 1)
        )
        take(
            "ONAIR_GOP_MAX_DURATION_MS",
            "gop_max_duration_ms",
            lambda n, r: _int(n, r, 1000, 120_000),
        )
        take(
            "ONAIR_GOP_MAX_BYTES",
            "gop_max_bytes",
            lambda n, r: _int(n, r, 64 * KIB, GOP_BYTES_CEILING),
        )
        take(
            "ONAIR_CHAT_MAX_MARKS_PER_CHAR",
            "chat_max_marks_per_char",
            lambda n, r: _int(n, r, 1, 32),
        )
        take("ONAIR_CHAT_MAX_TEXT_CHARS", "chat_max_text_chars", lambda n, r: _int(n, r, 1, 4000))
        take(
            "ONAIR_CHAT_MAX_FRAME_CHARS",
            "chat_max_frame_chars",
            lambda n, r: _int(n, r, 256, 1024 * KIB),
        )
        take("ONAIR_CHAT_FRAMES_PER_S", "chat_frames_per_s", lambda n, r: _float(n, r, 0.1, 1000))
        take(
            "ONAIR_HTTP_MAX_BODY_BYTES",
            "http_max_body_bytes",
            lambda n, r: _int(n, r, 1 * KIB, 16 * MIB),
        )
        if str(values.get("storage_url", "")).startswith("s3://") and not values.get("s3_endpoint"):
            raise ConfigError("ONAIR_S3_ENDPOINT", "required when ONAIR_STORAGE_URL is s3://")
        return cls(**values).with_secrets()

    def with_secrets(self) -> Settings:
        """Fill an empty admin token / token secret from `<state_dir>/secrets`, creating it with
        fresh random values the first time, so every process on this machine agrees."""
        if self.admin_token and self.token_secret:
            return self
        path = Path(self.state_dir) / "secrets"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # written whole under a temporary name, then linked into place: of two processes
            # starting at once, one wins and both read the same complete file
            tmp = path.with_name(f".secrets-{os.getpid()}-{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{secrets.token_urlsafe(24)}\n{secrets.token_urlsafe(32)}\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        admin, secret = path.read_text().split()[:2]
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["admin_token"] = self.admin_token or admin
        values["token_secret"] = self.token_secret or secret
        return Settings(**values)

    @property
    def replay_retention_ms(self) -> int:
        return self.replay_retention_hours * 3_600_000

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://{self.public_host}:{self.rtmp_port}/live"

    def playback_url(self, channel: str) -> str:
        return f"http://{self.public_host}:{self.http_port}/live/{channel}/master.m3u8"

    def low_latency_url(self, channel: str) -> str:
        """The LL-HLS master playlist (CMAF parts, blocking reload)."""
        return f"http://{self.public_host}:{self.http_port}/live/{channel}/ll.m3u8"

    def player_url(self, channel: str) -> str:
        return f"http://{self.public_host}:{self.http_port}/watch/{channel}"

    def group(self, role: str) -> str:
        """The consumer group of a role: `transcode.720p60` → `onair.transcode.720p60`."""
        return f"{self.group_prefix}.{role}"

    def s3_options(self) -> dict[str, str]:
        options = {"endpoint_url": self.s3_endpoint or "", "region": self.s3_region}
        if self.s3_access_key:
            options["access_key"] = self.s3_access_key
        if self.s3_secret_key:
            options["secret_key"] = self.s3_secret_key
        return options

    def __repr__(self) -> str:  # secrets never reach a log line through repr()
        shown = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("admin_token", "token_secret", "s3_secret_key")
        }
        return f"Settings({shown})"


_PRESETS = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
]


def _preset(name: str, raw: str) -> str:
    if raw not in _PRESETS:
        raise ConfigError(name, f"{raw!r} is not an x264 preset ({', '.join(_PRESETS)})")
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"{raw[:40]!r} is not 1/0, true/false, yes/no or on/off")


def _group_prefix(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", raw):
        raise ConfigError(name, f"{raw[:40]!r} may hold only letters, digits, '.', '_', '-'")
    return raw


def _hours(name: str, raw: str) -> int:
    return _int(name, raw, 1, 24 * 365)
