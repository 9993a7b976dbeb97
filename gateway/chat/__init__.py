"""Live chat over WebSocket, one chat server per HTTP gateway process, joined through Kafka.

service.py       `ChatService`: the lifecycle (producer, followers, hub, history readers),
                 moderation, history, and the routes it mounts; `ChatConfig`
protocol.py      the WebSocket protocol at `/chat/<channel>`: frames in, replies out
routes.py        the REST endpoints (history, moderation, tokens) and their OpenAPI fragment
fanout.py        `FanoutHub` (coalescing per channel) and `ClientOutbox` (one bounded writer
                 per viewer)
followers.py     `PartitionFollower` (onair.chat) and `ModerationFollower` (onair.moderation)
history.py       `HistoryReader`: a channel's messages read back from onair.chat
partitioner.py   `murmur2` / `partition_for`: a channel's partition, as Kafka's Java client
frames.py        the JSON frames more than one module writes

The chat rules (ban, text, slow mode, duplicate, rate) are the domain's: `pipeline/chat.py`.
The frame reference is `docs/chat.md`.
"""
