"""Identifiers are checked whole: `re.match` with `$` let a trailing newline through
("demo2\\n" became a channel whose stream ids no store key accepted)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.origin.hls import STREAM_ID
from pipeline import keys
from pipeline.channels import InvalidChannelName, check_channel_name, new_stream_id
from pipeline.chat import valid_channel
from pipeline.errors import StoreError
from pipeline.store import check_key
from pipeline.tokens import USER_RE, canonical_user


@pytest.mark.parametrize("name", ["demo2\n", "demo\r", "\ndemo", "de mo", "", "x" * 33])
def test_bad_channel_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidChannelName):
        check_channel_name(name)


def test_good_channel_names_pass() -> None:
    assert check_channel_name("demo_2") == "demo_2"


@pytest.mark.parametrize(
    "key", ["vod/s1/master.m3u8\n", "live/demo\n/index.m3u8", "/abs", "a//b", "a/../b"]
)
def test_bad_store_keys_are_refused(key: str) -> None:
    with pytest.raises(StoreError):
        check_key(key)


def test_good_store_keys_pass() -> None:
    assert check_key("streams/s-1/720p30/000001.ts") == "streams/s-1/720p30/000001.ts"


# -- fuzzed: what passes is safe wherever it goes next ----------------------------------------

path_parts = st.one_of(
    st.sampled_from(["", ".", "..", "...", ".meta", "a", "A-1", "x.ts", "\n", "\x00", "\\", "~"]),
    st.text(max_size=8),
)
key_candidates = st.one_of(
    st.lists(path_parts, min_size=1, max_size=6).map("/".join),
    st.text(max_size=40),
    st.text(alphabet="a./\n", max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(key_candidates)
def test_a_key_that_passes_stays_inside_the_store(key: str) -> None:
    try:
        assert check_key(key) == key
    except StoreError:
        return
    assert key.isascii() and key.isprintable() and 0 < len(key) <= 512
    root = "/store"
    joined = posixpath.join(root, key)
    assert posixpath.normpath(joined) == joined  # nothing to collapse: no "", ".", ".."
    assert joined.startswith(root + "/")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"[a-z0-9_]{1,32}\n?", fullmatch=True)))
def test_a_channel_name_that_passes_works_everywhere_it_goes(name: str) -> None:
    """A created channel must have a chat, playlists and stream ids every store key accepts
    (issue 12, item 2: one with a trailing newline stuck a transcode partition)."""
    try:
        assert check_channel_name(name) == name
    except InvalidChannelName:
        return
    assert name.isascii() and "\n" not in name
    assert valid_channel(name)
    check_key(keys.live_master_key(name))
    stream_id = new_stream_id(name, 1_700_000_000_000)
    assert STREAM_ID.fullmatch(stream_id)
    check_key(keys.segment_key(stream_id, "720p30", 1))
    check_key(keys.vod_master_key(stream_id))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.sampled_from(["Alice", " bob ", "\u212a", "\u0130"])))
def test_a_user_name_is_canonical_once_it_passes(name: str) -> None:
    try:
        user = canonical_user(name)
    except ValueError:
        return
    assert USER_RE.fullmatch(user) and user.isascii()
    assert canonical_user(user) == user
