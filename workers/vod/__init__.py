"""The VOD role: when a stream ends, turn its live segments into a finished VOD.

    onair.streams ──StreamEnded──▶ VodWorker ──▶ read the stream's history (onair.streams)
                                      │            and its SegmentReady events (onair.segments)
                                      ▼
                                  VodBuilder ──▶ vod/<stream_id>/master.m3u8
                                      │          vod/<stream_id>/<rendition>/index.m3u8
                                      │          vod/<stream_id>/<rendition>.mp4   (faststart)
                                      │          vod/<stream_id>/poster.jpg
                                      │          vod/<stream_id>/thumbs.jpg + thumbs.vtt
                                      │          vod/<stream_id>/chapters.vtt
                                      ▼
                                  onair.vods (compacted catalog, key stream_id) ──▶ commit

Segments are not copied: they live once under `streams/<stream_id>/<rendition>/<seq>.ts` and
the VOD playlists name them `NNNNNN.ts` (the origin maps `/vod/<sid>/<r>/<seq>.ts` there), so
nothing under `streams/` may be deleted while a VOD exists (docs/vod.md, "Retention").

Modules, from pure to I/O:

- `timeline.py`: `SegmentSet`, and `Timeline`: one stream's segments, aligned across
  renditions (GOP N = segment N), with the runs between discontinuities (a reconnect, a
  missing GOP, a timestamp jump), media offsets and the wall clock → media time mapping that
  places chapters.
- `chapters.py`: chapters (StreamUpdated title/category changes) and their WebVTT;
  `playlists.py`: the VOD media and master playlists, chapters as `EXT-X-DATERANGE`.
- `media.py`: `splice_ts()` joins segments into one continuous MPEG-TS per run,
  `remux_mp4()` has ffmpeg copy the runs into one MP4 (`-c copy -movflags +faststart`);
  `thumbnails.py`: the poster and the thumbnail sprite are decoded keyframes encoded as JPEG
  with PyAV.
- `spool.py`: `SegmentSpool` + `Prefetcher`: while a stream is live, its segments are copied
  to a local spool as they are announced, so the end-of-stream work reads local files
  instead of the whole stream from the store (the spool is only a cache: anything missing is
  fetched).
- `history.py`: the Kafka reads (`read_stream_history()`, `channel_info_at()`,
  `collect_segments()`); `builder.py`: `VodBuilder`, every file of one VOD and its catalog
  record; `worker.py`: `VodWorker`, the loop.
"""
