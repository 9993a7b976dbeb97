"""Chapters: the channel's title and category changes (StreamUpdated) placed on the VOD's
media time, and written as WebVTT (`chapters.vtt`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workers.vod.timeline import MS_90K, Timeline


@dataclass(frozen=True, slots=True)
class Chapter:
    start_ms: int  # media time from the start of the VOD
    title: str | None
    category: str | None

    @property
    def label(self) -> str:
        title = self.title or "Untitled"
        return f"{title} ({self.category})" if self.category else title


def chapters_for(
    timeline: Timeline,
    initial: tuple[str | None, str | None],
    updates: Iterable[Mapping[str, Any]],
    min_length_ms: int = 1000,
) -> list[Chapter]:
    """The first chapter has the channel's title and category at the start; each
    StreamUpdated that changes them opens the next one where it happened. A chapter shorter
    than `min_length_ms` is replaced by its successor. No title nor category at all → none."""
    chapters = [Chapter(0, *initial)]
    for update in sorted(updates, key=lambda u: u["updated_ms"]):
        start_ms = timeline.offset_of_wall(update["updated_ms"]) // MS_90K
        title, category = update.get("title"), update.get("category")
        last = chapters[-1]
        if (title, category) == (last.title, last.category) or start_ms >= timeline.total_ms:
            continue
        if start_ms - last.start_ms < min_length_ms:
            chapters[-1] = Chapter(last.start_ms, title, category)
        else:
            chapters.append(Chapter(start_ms, title, category))
    if len(chapters) == 1 and chapters[0].title is None and chapters[0].category is None:
        return []
    return chapters


def vtt_time(ms: int) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _cue_text(text: str) -> str:
    flat = " ".join(text.split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chapters_vtt(chapters: Sequence[Chapter], total_ms: int) -> str:
    lines = ["WEBVTT", ""]
    for index, chapter in enumerate(chapters):
        end = chapters[index + 1].start_ms if index + 1 < len(chapters) else total_ms
        lines += [
            f"chapter-{index + 1}",
            f"{vtt_time(chapter.start_ms)} --> {vtt_time(end)}",
            _cue_text(chapter.label),
            "",
        ]
    return "\n".join(lines)
