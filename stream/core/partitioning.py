"""Which partition Kafka's default partitioner gives a key. Pure, so it compiles.

A customer's events must stay in one partition, in order, whoever produced them: a key
goes where the Java client's default partitioner (and aiokafka's ``DefaultPartitioner``)
sends it, the positive part of the key's 32-bit murmur2 hash modulo the partition count.
aiokafka hashes in pure Python, a quarter of ``rfm import``'s CPU; compiled with the rest
of the core (``stream.native``) this costs a fraction of that.
"""

from __future__ import annotations

from mypy_extensions import i64

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def _times_m(a: i64) -> i64:
    """``a * M mod 2**32`` in two halves, so no intermediate leaves the machine-int range
    (a compiled build then never falls back to arbitrary-precision integers)."""
    return ((a & 0xFFFF) * _M + ((((a >> 16) * _M) & 0xFFFF) << 16)) & _MASK


def murmur2(data: bytes) -> int:
    """The unsigned 32-bit murmur2 hash Kafka uses for keys (seed 0x9747b28c)."""
    length: i64 = len(data)
    h: i64 = (_SEED ^ length) & _MASK
    k: i64
    i: i64
    end: i64 = length - length % 4
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = _times_m(k)
        k ^= k >> 24
        h = _times_m(h) ^ _times_m(k)
    rest: i64 = length - end
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h = _times_m(h ^ data[end])
    h ^= h >> 13
    h = _times_m(h)
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: int) -> int:
    """The index, among the topic's partitions sorted by id, that ``key`` goes to."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
