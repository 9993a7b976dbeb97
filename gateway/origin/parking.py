"""Blocking LL-HLS reloads parked by the HTTP/1.1 listener (gateway/http/listen.py), and the
answers written to them.

A viewer's `?_HLS_msn=M&_HLS_part=P` for a part not listed yet costs no coroutine: the
listener hands the origin a `Parked` record (how to deliver the answer, how to tell the viewer
hung up) and the origin keeps it in a `ParkingLot` under its playlist until the part's event
comes (`LowLatencyOrigin._answer_parked`: one render written to every parked viewer) or
three target durations pass (the lot's timer: the 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response

PlaylistKey = tuple[str, str]  # (channel, rendition)


@dataclass(frozen=True, slots=True)
class Wire:
    """An answer as the HTTP/1.1 listener writes it: status, header lines (each ending in
    CRLF; the listener adds its Date and Server lines before them) and body."""

    status: int
    header_lines: bytes
    body: bytes


def wire_of(response: Response) -> Wire:
    """A Starlette response's status, headers and body as the listener writes them."""
    lines = b"".join(k + b": " + v + b"\r\n" for k, v in response.raw_headers)
    return Wire(response.status_code, lines, bytes(response.body))


@dataclass(eq=False, slots=True)
class Parked:
    """A blocking reload the listener parked: `deliver` is called once with its answer,
    unless `gone()` says the viewer hung up."""

    deliver: Callable[[Wire], None]
    gone: Callable[[], bool]
    stream_id: str = ""
    msn: int = 0
    part: int | None = None
    skip: bool = False
    zipped: bool = False
    target_s: float = 0.0
    timer: asyncio.TimerHandle | None = None
    done: bool = False

    def finish(self) -> None:
        """Answered, timed out or let go: it leaves the lot, its timer stops."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()


class ParkingLot:
    """The parked requests by playlist, on the event loop (no lock: only the loop touches
    it). A request leaves by `take` (its playlist changed: answered, or `keep`-ed waiting),
    or by its timer, which calls `on_timeout` once three target durations passed."""

    def __init__(self) -> None:
        self._parked: dict[PlaylistKey, list[Parked]] = {}
        self._live: dict[PlaylistKey, int] = {}  # how many of a playlist's still wait

    def park(
        self,
        key: PlaylistKey,
        parked: Parked,
        timeout_s: float,
        on_timeout: Callable[[Parked], None],
    ) -> None:
        self._parked.setdefault(key, []).append(parked)
        self._live[key] = self._live.get(key, 0) + 1
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(timeout_s, self._expire, key, parked, on_timeout)

    def take(self, key: PlaylistKey) -> list[Parked]:
        """Every request still parked on `key`, out of the lot (`keep` puts back the ones
        that must wait on)."""
        parked = self._parked.pop(key, None) or []
        self._live.pop(key, None)
        return [one for one in parked if not one.done]

    def keep(self, key: PlaylistKey, waiting: list[Parked]) -> None:
        if waiting:
            self._parked[key] = waiting
            self._live[key] = len(waiting)

    def _expire(
        self, key: PlaylistKey, parked: Parked, on_timeout: Callable[[Parked], None]
    ) -> None:
        if parked.done:
            return
        parked.finish()
        live = self._live.get(key, 0) - 1
        if live > 0:
            self._live[key] = live
        else:  # none of the playlist's requests waits any more
            self._live.pop(key, None)
            self._parked.pop(key, None)
        on_timeout(parked)
