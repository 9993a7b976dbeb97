"""The packager role: turns `SegmentReady` events into live HLS playlists.

One consumer group over `onair.segments` (key stream_id, so each packager owns whole
streams). Its state — each rendition's `LiveWindow`, each stream's master variants — lives in
two `ChangelogTable`s: dicts whose changes are produced to compacted changelog topics, to the
partition of the event that caused them, so a packager that takes a partition over restores
exactly the state of the streams on it and continues the same playlists (same media
sequence, same discontinuity count).

For each event, in this order: apply it to the tables in memory; write the playlists that
changed (media first, then the master: a master never names a missing playlist); produce the
table changes and wait for their acknowledgement; commit the event's offset. A packager killed
anywhere in between leaves the event uncommitted and its changes unrecorded, so its successor
applies it again and writes the same playlists: nothing lost, nothing listed twice. A failed
write, delivery or commit ends the process (the supervisor restarts it from the committed
offset).

(This was a faust app until faust's event handling lost events: faust acks the events its
stream skips around a rebalance, and the event whose agent raised, and commits them; a
restarted packager then never saw them and its windows waited for ever. See the fresh-broker
issue note. The changelog topics and their format — JSON keys and values — are the ones the
faust tables wrote, so state carries over.)

- `table.py`: `ChangelogTable`, the dicts and their changelog topics.
- `core.py`: `Packager`, what one event does to the tables and the playlists (no Kafka).
- `worker.py`: `PackagerWorker`, the Kafka loop in the order above.
"""
