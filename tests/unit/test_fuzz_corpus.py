"""The committed fuzz seeds (`tests/fuzz/corpus/`) replay through their targets without a
crash, reach the parsers they were captured for, and stay small. A crash input atheris finds
is added to its corpus once fixed, and so stays a regression test here."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.rtmp.session import ConfigReady, Media, PublishRequested, RtmpSession
from tests.fuzz.targets import HANDSHAKE, SLICES, TARGETS

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_seed_replays_through_its_target(name: str) -> None:
    seeds = sorted((CORPUS / name).iterdir())
    assert len(seeds) >= 3, f"corpus/{name} has too few seeds"
    for seed in seeds:
        TARGETS[name](seed.read_bytes())


def test_the_corpora_stay_small() -> None:
    sizes = {p: p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()}
    assert max(sizes.values()) <= 8 * 1024, max(sizes, key=lambda p: sizes[p])
    assert sum(sizes.values()) <= 256 * 1024


@pytest.mark.parametrize("capture", ["ffmpeg", "obs-like"])
def test_captured_publishes_reach_the_media(capture: str) -> None:
    """The publish seeds get a real session as far as codec configuration and media units."""
    seed = (CORPUS / "rtmp" / f"{capture}-publish-and-media").read_bytes()
    assert SLICES[seed[1]] == 4096
    session = RtmpSession()
    events = []
    for start in range(0, len(HANDSHAKE + seed[2:]), 4096):
        _, more = session.feed((HANDSHAKE + seed[2:])[start : start + 4096])
        if any(isinstance(e, PublishRequested) for e in more):
            more += session.accept_publish()[1]
        events += more
    assert any(isinstance(e, ConfigReady) for e in events)
    assert any(isinstance(e, Media) for e in events)
