"""The object-store layout, spelled once. Every role that writes or reads an object names it
through these functions: transcode (segments), packager (live playlists), VOD (VOD files),
rebuild (the same layout under its own prefix) and the HLS origin (URL → key).

    streams/<stream_id>/<rendition>/<NNNNNN>.ts   a segment (immutable; live and VOD share it)
    streams/<stream_id>/<rendition>/<NNNNNN>.m4s  the same segment as CMAF (low-latency HLS):
                                                  its parts' fragments back to back
    streams/<stream_id>/<rendition>/<NNNNNN>.<P>.m4s  part P of that segment (a CMAF chunk)
    streams/<stream_id>/<rendition>/init-<digest>.mp4 the CMAF init segment its parts need
    live/<channel>/master.m3u8                    the live master playlist
    live/<channel>/<rendition>/index.m3u8         a live media playlist; it lists segments as
                                                  <stream_id>/<NNNNNN>.ts (see live_segment_uri),
                                                  or .m4s when no MPEG-TS is written
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


def cmaf_segment_name(sequence: int | str, part: int | str | None = None) -> str:
    """`000042.m4s` (the whole segment) or `000042.3.m4s` (its part 3)."""
    digits = f"{sequence:06d}" if isinstance(sequence, int) else sequence
    return f"{digits}.m4s" if part is None else f"{digits}.{part}.m4s"


def cmaf_key(stream_id: str, rendition: str, name: str) -> str:
    """A CMAF object of a rendition: `cmaf_segment_name(...)` or an init's `init-….mp4`."""
    return f"streams/{stream_id}/{rendition}/{name}"


def live_master_key(channel: str) -> str:
    return f"live/{channel}/master.m3u8"


def live_media_key(channel: str, rendition: str) -> str:
    return f"live/{channel}/{rendition}/index.m3u8"


def live_segment_uri(stream_id: str, sequence: int, *, cmaf: bool = False) -> str:
    """A segment's URI in a live media playlist (relative to it): the origin maps
    /live/<channel>/<rendition>/<stream_id>/<NNNNNN>.ts to `segment_key` (`cmaf`: the
    CMAF segment <NNNNNN>.m4s, to `cmaf_key`)."""
    return f"{stream_id}/{cmaf_segment_name(sequence) if cmaf else segment_name(sequence)}"


def live_init_uri(stream_id: str, init_key: str) -> str:
    """The URI of a CMAF init segment (`init_key`) in a live media playlist (EXT-X-MAP)."""
    return f"{stream_id}/{init_key.rsplit('/', 1)[-1]}"


def vod_key(stream_id: str, name: str) -> str:
    return f"vod/{stream_id}/{name}"


def vod_master_key(stream_id: str) -> str:
    return vod_key(stream_id, "master.m3u8")


def vod_media_key(stream_id: str, rendition: str) -> str:
    return vod_key(stream_id, f"{rendition}/index.m3u8")
