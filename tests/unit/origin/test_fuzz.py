"""The origin's URL → key rules and its Range parser, fed hostile request targets and headers.

Request targets go through what a real request meets: the ASCII target as uvicorn passes it
(`raw_path`, and `path` percent-decoded), Starlette's route matching (first full match wins,
as in the router), then `HlsOrigin.key_for`. The invariant: no exception, and a key is either
refused (None) or one of the store layout's shapes (`pipeline/keys.py`), made only of the
target's own segments, never naming a store-internal file (a `.meta` sidecar, a dot file).
"""

from __future__ import annotations

import re
import string
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from gateway.origin.hls import (
    ORIGIN_ROUTES,
    HlsOrigin,
    OriginRoute,
    RangeNotSatisfiable,
    etag_matches,
    parse_range,
)
from pipeline import keys
from pipeline.store import check_key

FUZZ = settings(max_examples=150, deadline=None)

_SID = r"[A-Za-z0-9_.\-]{1,80}"
_RENDITION = r"[0-9]{2,4}p[0-9]{2,3}"
LAYOUT = re.compile(
    "|".join(
        [
            r"live/[a-z0-9_]{1,32}/master\.m3u8",
            rf"live/[a-z0-9_]{{1,32}}/{_RENDITION}/index\.m3u8",
            rf"streams/{_SID}/{_RENDITION}/[0-9]{{1,12}}\.ts",
            rf"streams/{_SID}/{_RENDITION}/[0-9]{{1,12}}(?:\.[0-9]{{1,3}})?\.m4s",
            rf"streams/{_SID}/{_RENDITION}/init-[0-9a-f]{{16}}\.mp4",
            rf"vod/{_SID}/master\.m3u8",
            rf"vod/{_SID}/{_RENDITION}/index\.m3u8",
            rf"vod/{_SID}/[A-Za-z0-9_\-][A-Za-z0-9_.\-]{{0,79}}\.(?:mp4|jpg|vtt|json)",
        ]
    )
)
FIXED_PARTS = {"live", "streams", "vod", "master.m3u8", "index.m3u8"}


async def _unused(request: Request) -> Response:
    raise AssertionError("never called")


ROUTES = [(Route(spec.path, _unused), spec) for spec in ORIGIN_ROUTES]


def route_target(
    raw: bytes, *, with_raw_path: bool = True
) -> tuple[OriginRoute, str | None] | None:
    """The origin route a GET of `raw` reaches and the key it maps to; None: no route."""
    path = unquote(raw.decode("ascii"))  # what uvicorn puts in `path`
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    if with_raw_path:
        scope["raw_path"] = raw
    for route, spec in ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return spec, HlsOrigin.key_for(Request({**scope, **child}), spec.key_for)
    return None


def assert_in_layout(key: str, raw: bytes) -> None:
    assert check_key(key) == key
    assert LAYOUT.fullmatch(key), key
    *_, last = key.split("/")
    assert not last.startswith(".") and not last.endswith(".meta"), key
    segments = set(raw.decode("ascii").split("/"))
    for part in key.split("/"):
        name = part.removesuffix(".ts")
        assert part in FIXED_PARTS or part in segments or name in segments, (part, raw)


TRICKY_SEGMENTS = [
    *("", ".", "..", "...", ".hidden", ".tmp-x", "%2e%2e", "%2E%2e", "%2f", "%5c", "%00"),
    *("a%2fb", "..%2f..", "\\", "a\\b", "%", "%zz", "%25", "%0a", "x.mp4.meta", "x.meta"),
    *("%61", "s%31", "%37%32%30p30", "%64emo", "000001%2ets", "master%2Em3u8"),  # "a", "s1", …
    *("demo", "Demo", "720p30", "720p", "p30", "1080p60", "000001.ts", "1.ts", "x.ts"),
    *("master.m3u8", "index.m3u8", "rec.mp4", "thumb.jpg", "ch.vtt", "c.json", "s1", "s-1"),
    *("streams", "live", "vod", "secret", "s" * 81, "9" * 13 + ".ts", "a" * 33),
]
target_chars = string.ascii_letters + string.digits + "-._~%/\\:@!$&'()*+,;=" + "\x7f"
segments = st.one_of(
    st.sampled_from(TRICKY_SEGMENTS), st.text(alphabet=target_chars.replace("/", ""), max_size=12)
)
VALID = {
    "channel": st.from_regex(r"[a-z0-9_]{1,32}", fullmatch=True),
    "rendition": st.from_regex(r"[0-9]{2,4}p[0-9]{2,3}", fullmatch=True),
    "stream_id": st.from_regex(r"[A-Za-z0-9_.\-]{1,80}", fullmatch=True),
    "seq": st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    "name": st.from_regex(
        r"[0-9]{1,12}(\.[0-9]{1,3})?\.m4s|init-[0-9a-f]{16}\.mp4", fullmatch=True
    ),
    "file": st.from_regex(r"[A-Za-z0-9_.\-]{1,20}\.(mp4|jpg|vtt|json|meta)", fullmatch=True),
}


def route_shaped(template: str) -> st.SearchStrategy[bytes]:
    """Targets in the shape of one origin route, each parameter valid or hostile."""
    names = re.findall(r"\{(\w+)\}", template)
    values = [st.one_of(VALID[name], VALID[name], segments) for name in names]

    def build(filled: tuple[str, ...]) -> bytes:
        parts = iter(filled)
        return re.sub(r"\{\w+\}", lambda _: next(parts), template).encode("ascii")

    return st.tuples(*values).map(build)


free_targets = st.tuples(
    st.sampled_from(["/live/", "/vod/", "/", "//live/", "/live//", ""]),
    st.lists(segments, min_size=1, max_size=6),
).map(lambda t: (t[0] + "/".join(t[1])).encode("ascii"))


def check_target(raw: bytes) -> None:
    found = route_target(raw)
    if found is None:
        return
    _spec, key = found
    if key is not None:
        assert b"%" not in raw and b"\\" not in raw
        assert_in_layout(key, raw)


@pytest.mark.parametrize("template", [r.path for r in ORIGIN_ROUTES])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_route_shaped_targets_map_into_the_layout_or_nowhere(
    template: str, data: st.DataObject
) -> None:
    check_target(data.draw(route_shaped(template)))


@FUZZ
@given(st.one_of(free_targets, st.text(alphabet=target_chars, max_size=60).map(str.encode)))
def test_any_target_maps_into_the_layout_or_nowhere(raw: bytes) -> None:
    check_target(raw)


@FUZZ
@given(st.text(max_size=60).map(lambda t: "/vod/" + t), st.sampled_from(["", "/master.m3u8"]))
def test_without_raw_path_any_decoded_path_is_safe(path: str, tail: str) -> None:
    """An ASGI server that leaves out `raw_path` (and passes any text as `path`)."""
    scope = {"type": "http", "method": "GET", "path": path + tail, "root_path": ""}
    for route, spec in ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            key = HlsOrigin.key_for(Request({**scope, **child}), spec.key_for)
            if key is not None:
                assert_in_layout(key, (path + tail).encode("utf-8"))
            return


names = st.from_regex(r"[a-z0-9_]{1,32}", fullmatch=True)
stream_ids = st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,79}", fullmatch=True)
renditions = st.from_regex(r"[1-9][0-9]{1,3}p[1-9][0-9]{1,2}", fullmatch=True)
sequences = st.from_regex(r"[0-9]{1,12}", fullmatch=True)
vod_files = st.from_regex(
    r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,70}\.(mp4|jpg|vtt|json)", fullmatch=True
)


@settings(max_examples=60, deadline=None)
@given(names, stream_ids, renditions, sequences, vod_files)
def test_every_layout_key_is_served_at_its_url(
    channel: str, stream_id: str, rendition: str, seq: str, vod_file: str
) -> None:
    """The round trip: each URL form the docstring of gateway/origin/hls.py lists maps to
    the key `pipeline.keys` names (for a VOD file, unless it is one of the fixed names)."""
    cases = [
        (f"/live/{channel}/master.m3u8", keys.live_master_key(channel)),
        (f"/live/{channel}/{rendition}/index.m3u8", keys.live_media_key(channel, rendition)),
        (
            f"/live/{channel}/{rendition}/{stream_id}/{seq}.ts",
            keys.segment_key(stream_id, rendition, seq),
        ),
        (f"/vod/{stream_id}/master.m3u8", keys.vod_master_key(stream_id)),
        (f"/vod/{stream_id}/{rendition}/index.m3u8", keys.vod_media_key(stream_id, rendition)),
        (f"/vod/{stream_id}/{rendition}/{seq}.ts", keys.segment_key(stream_id, rendition, seq)),
        (f"/vod/{stream_id}/{vod_file}", keys.vod_key(stream_id, vod_file)),
    ]
    for url, expected in cases:
        found = route_target(url.encode("ascii"))
        assert found is not None, url
        assert found[1] == expected, url


# -- Range ------------------------------------------------------------------------------------

numbers = st.one_of(
    st.just(""),
    st.integers(0, 2**64).map(str),
    st.integers(0, 3000).map(str),
    st.sampled_from(["00", "-1", "1e3", "0x10", "\u0661\u0662", " 1", "1 "]),
)
range_headers = st.one_of(
    st.tuples(
        st.sampled_from(["bytes", "BYTES", "Bytes", "items", "bytes ", " bytes"]),
        numbers,
        numbers,
        st.sampled_from(["", ",0-1", ", 5-", ",-3", " ", "\t", "\n", "-", "="]),
    ).map(lambda t: f"{t[0]}={t[1]}-{t[2]}{t[3]}"),
    st.text(max_size=40),
)


@FUZZ
@given(range_headers, st.one_of(st.integers(0, 3000), st.integers(0, 2**63)))
def test_range_is_a_span_of_the_object_or_refused(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable:
        assert header.strip().lower().startswith("bytes=")
        return
    if span is not None:
        first, last = span
        assert 0 <= first <= last < size


@FUZZ
@given(st.integers(0, 10**15), st.integers(0, 10**15), st.integers(1, 10**15))
def test_well_formed_ranges_select_what_rfc_9110_says(a: int, b: int, size: int) -> None:
    first, last = min(a, b), max(a, b)
    if first < size:
        assert parse_range(f"bytes={first}-{last}", size) == (first, min(last, size - 1))
        assert parse_range(f"bytes={first}-", size) == (first, size - 1)
    else:
        for header in (f"bytes={first}-{last}", f"bytes={first}-"):
            try:
                parse_range(header, size)
            except RangeNotSatisfiable:
                continue
            raise AssertionError(f"{header} of {size} bytes must be 416")
    if a > 0:
        assert parse_range(f"bytes=-{a}", size) == (max(0, size - a), size - 1)


@FUZZ
@given(st.text(max_size=60), st.text(alphabet=string.hexdigits, min_size=1, max_size=32))
def test_if_none_match_never_raises(header: str, tag: str) -> None:
    etag = f'"{tag}"'
    etag_matches(header, etag)
    assert etag_matches(f"{header},W/{etag}", etag)
