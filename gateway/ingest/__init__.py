"""Ingest: an accepted RTMP publish (from `gateway/rtmp`) becomes GOP chunks in Kafka.

handler.py       `IngestHandler`: stream-key check, one publisher per channel (in this process,
                 and across ingests through the lease log), lifecycle events to
                 `onair.streams`, the reconnect grace (`StreamState` per stream)
publication.py   `KafkaPublication`: one publish's media cut into GOPs (or GOP parts) and
                 produced to `onair.ingest.gops`
lease.py         the lease log's rules, pure: who owns each channel's stream
leases.py        `LeaseBook`: `onair.ingest.leases` followed into leases; claims read back
keeper.py        `LeaseKeeper`: renewals, fencing, ending the streams nobody owns
tail.py          a taken-over stream's last GOP in Kafka: where it goes on or ends
"""
