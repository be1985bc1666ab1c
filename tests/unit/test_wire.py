"""hiredis packing sends exactly the bytes redis-py's own packer would (stream.store.wire)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from stream.store.redis_store import connect
from stream.store.wire import hiredis_packing

args = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.binary(max_size=80),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    max_size=60,
)


@given(name=st.sampled_from(["EVALSHA", "HSET", "ZADD"]), rest=args)
def test_same_bytes_as_redis_py(name: str, rest: list[str | bytes | int]) -> None:
    ours = hiredis_packing(Connection)()
    theirs = Connection()
    assert b"".join(ours.pack_command(name, *rest)) == b"".join(theirs.pack_command(name, *rest))


def test_what_hiredis_refuses_goes_through_redis_py() -> None:
    conn = hiredis_packing(Connection)()
    with pytest.raises(DataError):
        conn.pack_command("SET", "k", True)
    assert b"".join(conn.pack_command("SET", "k", bytearray(b"v"))) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    )
    assert b"".join(conn.pack_command("CONFIG GET", "maxmemory")).startswith(
        b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n"
    )


def test_clients_keep_their_transport_and_pack_in_c() -> None:
    plain = connect("redis://127.0.0.1:1/0")
    tls = connect("rediss://127.0.0.1:1/0")
    assert isinstance(plain, aioredis.Redis)
    assert plain.connection_pool.connection_class.__name__ == "HiredisConnection"
    assert issubclass(tls.connection_pool.connection_class, SSLConnection)
    assert tls.connection_pool.connection_class.__name__ == "HiredisSSLConnection"
