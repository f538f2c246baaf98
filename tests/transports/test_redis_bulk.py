"""The Redis transport's chunk reader (``transports/redis/bulk.py``) against real servers.

It parses replies itself, so what redis-py would otherwise handle is checked here: missing
chunks, error replies, a chunk of the wrong size, logins (password, ACL user, database),
a dropped connection, a pipeline longer than its window, and large arrays byte for byte.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from simferry.transports.base import RunContext, SampleKey
from simferry.transports.exceptions import TransportError
from simferry.transports.redis import RedisConfig, RedisSpec, RedisTransport
from simferry.workload.tasks import checksum

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.integration
if RedisConfig().unavailable_reason():
    pytestmark = [pytestmark, pytest.mark.skip(reason=str(RedisConfig().unavailable_reason()))]

from simferry.transports.redis.bulk import BulkReader  # noqa: E402
from simferry.transports.redis.server import RedisServer  # noqa: E402

KEY = SampleKey(3, 4, "input")
PASSWORD = "bulk-s3cret-pw"


@pytest.fixture
def owner(run_ctx: RunContext) -> Iterator[RedisTransport]:
    transport = RedisConfig(redis_chunk_bytes=1000).start(run_ctx)
    yield transport
    transport.close()


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "tcp", PASSWORD, 256 * 2**20, bind="127.0.0.1")
    server.start()
    yield server
    server.stop()


def chunk_keys(transport: RedisTransport, key: SampleKey = KEY) -> list[str]:
    raw = transport.client.get(transport._k(key.name()))
    assert raw is not None
    return transport._chunk_keys(key.name(), transport._header(raw))


def test_large_multi_chunk_arrays_arrive_byte_for_byte(run_ctx: RunContext) -> None:
    owner = RedisConfig(redis_chunk_bytes="1MiB").start(run_ctx)
    try:
        rng = np.random.default_rng(7)
        inp = rng.standard_normal((1531, 1021))  # 12.5 MB: 12 chunks and a partial one
        target = rng.standard_normal((1021, 1531)).astype(np.float32)
        target_key = SampleKey(3, 4, "target")
        owner.put_many([(KEY, inp), (target_key, target)])
        worker = pickle.loads(pickle.dumps(owner.config())).connect()
        assert worker.bulk is not None, "a Unix socket server is read with the bulk reader"
        got_inp, got_target = worker.get_many([KEY, target_key])
        assert got_inp.shape == inp.shape and got_target.dtype == np.float32
        assert checksum(got_inp, got_target) == checksum(inp, target)
        assert got_inp.flags.writeable and got_inp.flags.c_contiguous
        worker.close()
    finally:
        owner.close()


def test_a_window_shorter_than_the_pipeline_reads_every_chunk(owner: RedisTransport) -> None:
    arr = np.arange(2000, dtype=np.float64)  # 16 chunks of 1000 bytes
    owner.put(KEY, arr)
    spec = owner.config()
    reader = BulkReader(spec.url, spec.password_value(), window_bytes=3000, chunk_bytes=1000)
    assert reader.window == 3
    out = np.zeros(arr.nbytes, np.uint8)
    sizes: list[int] = []

    def land(i: int, size: int) -> memoryview:
        sizes.append(size)
        return out.data[i * 1000 : i * 1000 + size]

    keys = chunk_keys(owner)
    reader.fetch(keys, land)
    reader.close()
    assert sizes == [1000] * 16
    assert out.view(np.float64).tolist() == arr.tolist()


def test_a_missing_chunk_is_reported_not_filled_in(owner: RedisTransport) -> None:
    owner.put(KEY, np.arange(500.0))  # 4 chunks
    keys = chunk_keys(owner)
    owner.client.delete(keys[2])
    spec = owner.config()
    reader = BulkReader(spec.url, spec.password_value())
    sizes: list[int] = []
    reader.fetch(keys, lambda i, size: sizes.append(size))
    reader.close()
    assert sizes == [1000, 1000, -1, 1000]
    with pytest.raises(TransportError, match=r"is incomplete: some of its data was removed"):
        owner.get(KEY)
    owner.put(KEY, np.ones(7))
    assert np.array_equal(owner.get(KEY), np.ones(7)), "the connection stays usable"


def test_a_chunk_of_the_wrong_size_is_skipped_and_the_array_refused(
    owner: RedisTransport,
) -> None:
    owner.put(KEY, np.arange(250.0))  # 2 chunks of 1000 bytes
    owner.client.set(chunk_keys(owner)[0], b"x" * 1500)  # overruns the array
    with pytest.raises(TransportError, match=r"is incomplete"):
        owner.get(KEY)
    other = SampleKey(0, 0, "target")
    owner.put(other, np.arange(300.0))
    assert np.array_equal(owner.get(other), np.arange(300.0)), "replies stay in step"


def test_an_error_reply_is_one_sentence_and_the_connection_stays_in_step(
    owner: RedisTransport,
) -> None:
    owner.put(KEY, np.arange(250.0))
    owner.client.delete(chunk_keys(owner)[1])
    owner.client.hset(chunk_keys(owner)[1], "f", "v")  # GET of a hash: WRONGTYPE
    with pytest.raises(TransportError) as info:
        owner.get(KEY)
    msg = str(info.value)
    assert msg.startswith("The Redis server (the run's redis-server at unix://")
    assert "refused reading s000003/0004-input: WRONGTYPE" in msg
    owner.put(KEY, np.arange(9.0))
    assert np.array_equal(owner.get(KEY), np.arange(9.0))


def test_wrong_password_is_the_transports_login_sentence(owner: RedisTransport) -> None:
    spec = owner.config()
    wrong = RedisSpec(
        url=spec.url,
        password="not-it",
        namespace=spec.namespace,
        chunk_bytes=1000,
        where=spec.where,
    )
    reader = BulkReader(wrong.url, wrong.password_value())
    with pytest.raises(redis.exceptions.AuthenticationError):
        reader.fetch(["k"], lambda i, size: None)
    assert "not-it" not in repr(reader)
    owner.put(KEY, np.ones(3))
    worker = RedisTransport(wrong)
    worker.client = owner.client  # headers readable; only the chunk reads log in afresh
    with pytest.raises(TransportError) as info:
        worker.get(KEY)
    assert str(info.value).startswith(f"The Redis server at {spec.where} rejected the password")
    assert "not-it" not in str(info.value)
    assert worker.bulk is not None
    worker.bulk.close()


def test_acl_user_and_database_from_the_url(tcp_server: RedisServer) -> None:
    admin = tcp_server.client(5.0)
    admin.acl_setuser("reader", enabled=True, passwords=["+user-pw"], keys="*", commands=["+@all"])
    url = f"redis://reader@127.0.0.1:{tcp_server.port}/3"
    spec = RedisSpec(url=url, password="user-pw", namespace="t:", chunk_bytes=100, where=url)
    transport = RedisTransport(spec)
    assert transport.bulk is not None
    arr = np.arange(100, dtype=np.int32)  # 4 chunks over TCP
    transport.put(KEY, arr)
    assert np.array_equal(transport.get(KEY), arr)
    transport.close()
    db3 = redis.Redis(host="127.0.0.1", port=tcp_server.port, password=PASSWORD, db=3)
    assert len(db3.keys("t:c:*")) == 4, "the chunks are in database 3"
    db3.close()
    admin.close()


def test_a_dropped_idle_connection_is_replaced(owner: RedisTransport) -> None:
    owner.put(KEY, np.arange(400.0))
    assert np.array_equal(owner.get(KEY), np.arange(400.0))
    owner.client.client_kill_filter(_type="normal", skipme=True)  # the bulk reader's too
    assert np.array_equal(owner.get(KEY), np.arange(400.0))


def test_tls_urls_stay_with_redis_py() -> None:
    spec = RedisSpec(url="rediss://127.0.0.1:6390/0", namespace="t:", chunk_bytes=1000, where="tls")
    transport = RedisTransport(spec)
    assert transport.bulk is None
    transport.close()


def test_the_redis_py_path_lands_chunks_the_same_way(owner: RedisTransport) -> None:
    arrays = [np.arange(125.0), np.arange(126.0), np.array(2.5), np.zeros((0, 3))]
    keys = [SampleKey(i, 0, "input") for i in range(len(arrays))]
    owner.put_many(list(zip(keys, arrays, strict=True)))
    owner.bulk = None
    for want, got in zip(arrays, owner.get_many(keys), strict=True):
        assert got.shape == want.shape and np.array_equal(got, want)
    owner.client.delete(chunk_keys(owner, keys[1])[0])
    with pytest.raises(TransportError, match="is incomplete"):
        owner.get(keys[1])


def test_threads_take_turns_and_a_forked_child_connects_anew(owner: RedisTransport) -> None:
    # 250 chunks each: every read blocks in recv many times, so unguarded threads interleave.
    arrays = {SampleKey(i, 0, "input"): np.arange(31_250.0) + i for i in range(3)}
    owner.put_many(list(arrays.items()))
    failed: list[object] = []

    def reader() -> None:
        for _ in range(5):
            try:
                for key, got in zip(arrays, owner.get_many(list(arrays)), strict=True):
                    if not np.array_equal(got, arrays[key]):
                        failed.append(key)
            except TransportError as exc:
                failed.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert owner.bulk is not None
    inherited = owner.bulk.sock
    assert inherited is not None
    pid = os.fork()
    if pid == 0:  # the child reads on a connection of its own, then leaves without cleanup
        ok = all(np.array_equal(owner.get(k), v) for k, v in arrays.items())
        os._exit(0 if ok and owner.bulk.sock is not inherited else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert all(np.array_equal(owner.get(k), v) for k, v in arrays.items()), "parent unharmed"
    assert owner.bulk.sock is inherited
