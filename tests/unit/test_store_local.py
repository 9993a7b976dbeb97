from __future__ import annotations

from pathlib import Path

import pytest

from objectstore import open_store
from objectstore.local import LocalStore
from tests.store_contract import *  # noqa: F403  (the shared contract suite)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_open_store_picks_local_for_paths(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)


def test_sidecar_metadata_is_not_listed(store: LocalStore) -> None:
    store.put("a/1.ts", b"x", content_type="video/mp2t", cache_control="c")
    assert store.list("") == ["a/1.ts"]


def test_head_of_an_object_written_before_etags_were_recorded(tmp_path: Path) -> None:
    """Objects written by an older onair have no ETag in their metadata: head() hashes them,
    and agrees with get()."""
    store = LocalStore(tmp_path)
    store.put("vod/s1/s1.mp4", b"x" * 5000, content_type="video/mp4", cache_control="max-age=1")
    (tmp_path / "vod/s1/s1.mp4.meta").write_text("video/mp4\nmax-age=1\n")
    assert store.head("vod/s1/s1.mp4").etag == store.get("vod/s1/s1.mp4").etag
    assert store.head("vod/s1/s1.mp4").size == 5000
