"""RTMP ingest, layer by layer (sans-I/O below `server`, so every parser can be fuzzed).

handshake.py   C0/C1/C2 → S0/S1/S2                     HandshakeError
chunk.py       chunk stream ⇄ messages, control         ChunkError
amf0.py        command and metadata values              AmfError
flv.py         AVC / AAC tag bodies, SPS, ASC           FlvError
to_media.py    FLV tags → CodecConfig, MediaUnit
session.py     the publish state machine: bytes in, bytes out + events
guard.py       per-address failed-auth blocking
limits.py      what one connection may spend before and after its publish (budgets)
server.py      asyncio listener driving one RtmpSession per connection
types.py       PublishHandler / Publication: what the rest of onair implements
"""
