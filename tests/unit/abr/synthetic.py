"""Small synthetic inputs for the ABR tests: a ladder's media with fixed chunk sizes and
throughput traces built from (seconds, kbps) steps, so a test states its network in a line."""

from __future__ import annotations

from bench.abr_media import Media, Rung
from bench.abr_sim import Trace

LADDER = (("160p30", 300), ("360p30", 800), ("480p30", 1500), ("720p60", 4500), ("1080p60", 6000))
OVERHEAD = 1.1  # audio and MPEG-TS on top of the video bitrate
SEGMENTS = 24


def media(overhead: float = OVERHEAD) -> Media:
    """Every segment of a rung is `nominal x overhead` bits per second; parts are quarters."""
    rungs = []
    for name, kbps in LADDER:
        wire_bps = round(kbps * 1000 * overhead)
        segment = wire_bps * 2 // 8
        part = segment // 4
        parts = (part, part, part, segment - 3 * part)
        rungs.append(
            Rung(
                name=name,
                nominal_bps=kbps * 1000,
                peak_bps=wire_bps,
                average_bps=wire_bps,
                segment_bytes=(segment,) * SEGMENTS,
                part_bytes=(parts,) * SEGMENTS,
            )
        )
    return Media(tuple(rungs), 2.0, 0.5, "synthetic")


def trace(name: str, *steps: tuple[float, float], rtt_s: float = 0.1) -> Trace:
    """`steps` = (seconds, kbps), ...; played in order, then looped."""
    return Trace.from_intervals(name, [(s, kbps * 1000.0, rtt_s) for s, kbps in steps])
