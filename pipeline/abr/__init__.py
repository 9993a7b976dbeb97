"""Adaptive bitrate: which rung a player fetches next.

- `note.py`: the architecture note's `ABRController`, kept exactly as written: the reference.
- `live.py`: `LiveAbrController`, onair's live-aware controller, the one the player runs
  (its JavaScript twin is gateway/http/static/abr.js).

`python -m bench.abr` compares them (with hls.js's default and dash.js's BOLA) on real
mobile network traces.
"""

from __future__ import annotations

from pipeline.abr.live import LiveAbrController
from pipeline.abr.note import ABRController

__all__ = ["ABRController", "LiveAbrController"]
