"""The transcode role: GOP chunks from `onair.ingest.gops` → one MPEG-TS segment per GOP per
rung, in the store, announced on `onair.segments`.

- `encoder.py`: PyAV decode, scale, x264 encode and mux of one GOP (`GopTranscoder`).
- `core.py`: records in, stored segments and their `SegmentReady` records out, no Kafka
  (`RungTranscoder`, `LadderTranscoder`); the live worker and the rebuild both drive it.
- `worker.py`: the Kafka loop of one rung (`TranscodeWorker`), with its commit rule.
"""
