"""Identifiers are checked whole: `re.match` with `$` let a trailing newline through
("demo2\\n" became a channel whose stream ids no store key accepted)."""

from __future__ import annotations

import pytest

from pipeline.channels import InvalidChannelName, check_channel_name
from pipeline.errors import StoreError
from pipeline.store import check_key


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
