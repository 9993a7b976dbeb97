"""The murmur2 partitioner: Kafka's own test vectors, and a positive modulo."""

from __future__ import annotations

import pytest

from gateway.chat.partitioner import murmur2, partition_for


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
    ids=["21", "foobar", "long", "longer", "longest", "abc"],
)
def test_murmur2_matches_kafka_java_vectors(key: bytes, expected: int) -> None:
    # the vectors of Kafka's UtilsTest.testMurmur2 (signed 32-bit ints)
    assert _signed(murmur2(key)) == expected


def test_partition_for_is_positive_modulo() -> None:
    assert partition_for(b"21", 6) == (-973932308 & 0x7FFFFFFF) % 6
    assert all(0 <= partition_for(bytes([i]), 7) < 7 for i in range(256))
