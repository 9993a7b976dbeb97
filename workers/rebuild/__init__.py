"""The rebuild (replay): a stream's output made again from the GOP chunks Kafka still holds.

    onair.streams ──StreamStarted (gops_partition, gops_first_offset)──┐
                  ──StreamEnded   (gops_last_offset)───────────────────┤
                                                                       ▼
    onair.ingest.gops[partition][first..last] ──▶ process pool ──▶ streams/<sid>/<r>/<seq>.ts
       (the stream's chunks, read once)           one LadderTranscoder     <seq>.m4s, <seq>.<p>.m4s,
                                                  per process              init-<digest>.mp4
                                                                           + SegmentReady-like
                                                                           results
                                                                       ▼
                                          VodBuilder ──▶ vod/<sid>/master.m3u8, <r>/index.m3u8
                                                         (+ MP4s, poster, thumbnails: --vod-files)

Each chunk goes through `LadderTranscoder.process()` (workers/transcode/core.py): per rung,
`RungTranscoder.process()`, the live transcode path itself, so GOP N becomes segment N with
the GOP's duration: the same boundaries and durations as live. The ladder is whatever the
caller asks for (a rung that was not live is fine, upscaling is not).
Chunks are spread over worker processes, which is what makes a rebuild faster than real time.

The output is a store in the platform's layout (`streams/...` + `vod/...`), so an onair
origin pointed at it serves the rebuilt VOD at the usual URLs, and a rebuild into the
platform's own store restores lost objects. If the stream's chunks have left the topic
(retention), the rebuild stops before doing anything and says so (`ReplayExpired`).

- `plan.py`: what to rebuild, without I/O: the rungs (`resolve_rungs()`), where the chunks
  are (`replay_range()`), whether they are still there (`check_retention()`), the errors.
- `output.py`: the output store (`StoreSpec`, opened in each worker process;
  `PrefixedStore`).
- `progress.py`: `ProgressBar`, on a terminal or in a log.
- `replay.py`: `rebuild()`: reads the chunks from Kafka, drives the process pool, writes
  the VOD.
"""
