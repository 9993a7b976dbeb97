"""Which partition of `onair.chat` carries a channel, computed locally.

`partition_for()` is Kafka's Java default partitioner for keyed messages (`murmur2` of the key,
made positive, modulo the partition count). The chat producer is configured with librdkafka's
`PARTITIONER` (`murmur2_random`), which places keyed messages the same way, so a chat server
knows which partition carries a channel without asking anyone. `murmur2` is written out here
and checked against the vectors of Kafka's own `UtilsTest`.
"""

from __future__ import annotations

PARTITIONER = "murmur2_random"  # Java-compatible for keyed messages; see partition_for()

_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (seed 0x9747b28c), as an unsigned 32-bit value."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK32
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner (and librdkafka's `murmur2_random`) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
