"""The object-store layout, spelled once. Every role that writes or reads an object names it
through these functions: transcode (segments), packager (live playlists), VOD (VOD files),
rebuild (the same layout under its own prefix) and the HLS origin (URL → key).

    streams/<stream_id>/<rendition>/<NNNNNN>.ts   a segment (immutable; live and VOD share it)
    live/<channel>/master.m3u8                    the live master playlist
    live/<channel>/<rendition>/index.m3u8         a live media playlist; it lists segments as
                                                  <stream_id>/<NNNNNN>.ts (see live_segment_uri)
    vod/<stream_id>/<name>                        a VOD's files: master.m3u8,
                                                  <rendition>/index.m3u8, <rendition>.mp4, …

Arguments are trusted identifiers (checked where they entered); the origin validates URL
parts before it calls these.
"""

from __future__ import annotations


def segment_name(sequence: int | str) -> str:
    """`000042.ts`: an int is zero-padded to six digits; a str (the digits of a URL) is kept."""
    digits = f"{sequence:06d}" if isinstance(sequence, int) else sequence
    return f"{digits}.ts"


def segment_key(stream_id: str, rendition: str, sequence: int | str) -> str:
    return f"streams/{stream_id}/{rendition}/{segment_name(sequence)}"


def live_master_key(channel: str) -> str:
    return f"live/{channel}/master.m3u8"


def live_media_key(channel: str, rendition: str) -> str:
    return f"live/{channel}/{rendition}/index.m3u8"


def live_segment_uri(stream_id: str, sequence: int) -> str:
    """A segment's URI in a live media playlist (relative to it): the origin maps
    /live/<channel>/<rendition>/<stream_id>/<NNNNNN>.ts to `segment_key`."""
    return f"{stream_id}/{segment_name(sequence)}"


def vod_key(stream_id: str, name: str) -> str:
    return f"vod/{stream_id}/{name}"


def vod_master_key(stream_id: str) -> str:
    return vod_key(stream_id, "master.m3u8")


def vod_media_key(stream_id: str, rendition: str) -> str:
    return vod_key(stream_id, f"{rendition}/index.m3u8")
