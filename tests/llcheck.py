"""A strict LL-HLS media playlist checker, written against draft-pantos-hls-rfc8216bis (not
against onair's renderer) on top of the independent `m3u8` parser. Used by the unit tests
of the renderer and by the e2e tests on what the origin serves."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import m3u8

TOLERANCE_S = 0.0005  # DURATION values are written with five decimals


@dataclass(frozen=True)
class Checked:
    playlist: m3u8.M3U8
    last_msn: int
    last_part: int


def check_ll_media(text: str, *, others: Iterable[str] = (), ended: bool = False) -> Checked:
    """Raise AssertionError naming the rule a low-latency media playlist breaks."""
    problems: list[str] = []
    lines = text.splitlines()
    version = int(_tag(lines, "#EXT-X-VERSION:") or 0)
    if version < 6:
        problems.append(f"EXT-X-VERSION {version} < 6 (EXT-X-MAP in a media playlist)")
    if any(line.startswith("#EXT-X-SKIP") for line in lines) and version < 9:
        problems.append("EXT-X-SKIP needs EXT-X-VERSION 9")
    p = m3u8.loads(text)
    if p.part_inf is None or not p.part_inf.part_target:
        raise AssertionError("no EXT-X-PART-INF:PART-TARGET")
    part_target = float(p.part_inf.part_target)
    target = float(p.target_duration or 0)
    control = p.server_control
    if control is None or control.can_block_reload != "YES":
        problems.append("EXT-X-SERVER-CONTROL lacks CAN-BLOCK-RELOAD=YES")
    else:
        if (control.part_hold_back or 0) < 3 * part_target - TOLERANCE_S:
            problems.append(f"PART-HOLD-BACK {control.part_hold_back} < 3 x {part_target}")
        if (control.can_skip_until or 0) < 6 * target - TOLERANCE_S:
            problems.append(f"CAN-SKIP-UNTIL {control.can_skip_until} < 6 x {target}")
    if not any(line.startswith("#EXT-X-MAP:") for line in lines):
        problems.append("no EXT-X-MAP (fMP4 needs its init segment)")
    segments = list(p.segments)
    if not segments:
        raise AssertionError("no segment at all")
    for n, segment in enumerate(segments):
        whole = segment.uri is not None
        name = segment.uri or f"segment in progress #{n}"
        if segment.program_date_time is None and (whole or not _open_segment_has_pdt(lines)):
            problems.append(f"{name}: no EXT-X-PROGRAM-DATE-TIME")
        if whole and round(segment.duration) > target:
            problems.append(f"{name}: EXTINF {segment.duration} rounds above the target {target}")
        parts = list(segment.parts)
        if parts and parts[0].independent != "YES":
            problems.append(f"{name}: its first part (an IDR) is not INDEPENDENT=YES")
        for i, part in enumerate(parts):
            if part.duration > part_target + TOLERANCE_S:
                problems.append(f"{part.uri}: DURATION {part.duration} > PART-TARGET")
            closing = i == len(parts) - 1
            if (not closing and part.independent != "YES"
                    and part.duration < 0.85 * part_target - TOLERANCE_S):  # fmt: skip
                problems.append(f"{part.uri}: DURATION {part.duration} < 85 % of PART-TARGET")
        if whole and parts and n > 0 and segments[n - 1].parts:
            listed = sum(x.duration for x in parts)
            if abs(listed - segment.duration) > 0.002 * len(parts):
                problems.append(f"{name}: EXTINF {segment.duration} != its parts' {listed:.5f}")
    # parts for at least the last three target durations (or every segment has them)
    span, start = 0.0, len(segments)
    for segment in reversed(segments):
        if not segment.parts:
            break
        span += segment.duration if segment.uri else sum(x.duration for x in segment.parts)
        start -= 1
    if start > 0 and span < 3 * target - TOLERANCE_S:
        problems.append(f"parts listed for {span:.3f} s only, fewer than 3 target durations")
    last = segments[-1]
    skipped = getattr(p.skip, "skipped_segments", 0) or 0
    last_msn = p.media_sequence + skipped + len(segments) - 1
    last_part = len(last.parts) - 1
    if ended:
        if not p.is_endlist:
            problems.append("ended, but no EXT-X-ENDLIST")
    else:
        hint = p.preload_hint
        if hint is None or hint.hint_type != "PART":
            problems.append("no EXT-X-PRELOAD-HINT:TYPE=PART")
        reported = {r.uri: r for r in p.rendition_reports}
        for other in others:
            if not any(uri.endswith(f"/{other}/ll.m3u8") for uri in reported):
                problems.append(f"no EXT-X-RENDITION-REPORT for {other}")
        for report in p.rendition_reports:
            if report.last_msn is None or report.last_part is None:
                problems.append(f"{report.uri}: report without LAST-MSN and LAST-PART")
    if problems:
        raise AssertionError("; ".join(problems) + "\n" + text)
    return Checked(p, last_msn, last_part)


def _open_segment_has_pdt(lines: list[str]) -> bool:
    """`m3u8` drops the PROGRAM-DATE-TIME of the segment in progress: read it raw (the tags
    after the last complete segment's URI, before its first part)."""
    uris = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    tail = lines[uris[-1] + 1 :] if uris else lines
    for line in tail:
        if line.startswith("#EXT-X-PART:"):
            return False
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            return True
    return False


def _tag(lines: list[str], prefix: str) -> str | None:
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


SKIP = re.compile(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=([0-9]+)")
