"""Ingest: an accepted RTMP publish (from `gateway/rtmp`) becomes GOP chunks in Kafka.

handler.py       `IngestHandler`: stream-key check, one publisher per channel, lifecycle
                 events to `onair.streams`, the reconnect grace (`StreamState` per stream)
publication.py   `KafkaPublication`: one publish's media cut into GOPs (or GOP parts) and
                 produced to `onair.ingest.gops`
"""
