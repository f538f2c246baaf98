"""The Redis transport against real redis-server processes: security, chunking, faults, reads.

The conformance suite runs over Redis (``tests/conformance/conftest.py``); this file covers
what is particular to it. "External" servers are real redis-servers the test starts
itself, standing for a user's server that simferry must reach, use and never stop.
"""

from __future__ import annotations

import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from simferry.config import build
from simferry.errors import UsageError
from simferry.transports.base import RunContext, SampleKey, WeightsKey
from simferry.transports.exceptions import TransportError, TransportFullError
from simferry.transports.redis import RedisConfig, RedisSpec, RedisTransport, strip_password
from simferry.workload.tasks import checksum

from ..helpers import only_run_dir, simferry, summary

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.integration
if RedisConfig().unavailable_reason():
    pytestmark = [pytestmark, pytest.mark.skip(reason=str(RedisConfig().unavailable_reason()))]

from simferry.transports.common import free_port  # noqa: E402
from simferry.transports.redis.bulk import BulkReader  # noqa: E402
from simferry.transports.redis.server import RedisServer  # noqa: E402

SMALL = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0", "--quiet"]
#: The same, with the tables printed (``--quiet`` prints nothing but errors).
SHOWN = SMALL[:-1]
KEY = SampleKey(1, 2, "input")


def servers_under(root: Path) -> list[psutil.Process]:
    """Live redis-server processes working in ``root`` (ours run in their run directory)."""
    found = []
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        info = proc.info
        if info["name"] != "redis-server" or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["cwd"] and Path(info["cwd"]).is_relative_to(root):
            found.append(proc)
    return found


def no_servers_left(root: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while servers_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not servers_under(root)


@pytest.fixture(autouse=True)
def _no_orphan_servers(tmp_path: Path) -> Iterator[None]:
    yield
    left = servers_under(tmp_path)
    for proc in left:
        proc.kill()
    assert not left, "a redis-server outlived its test"


@pytest.fixture
def owner(run_ctx: RunContext) -> Iterator[RedisTransport]:
    transport = RedisConfig(redis_chunk_bytes=1000).start(run_ctx)
    yield transport
    transport.close()


@pytest.fixture
def external(tmp_path: Path) -> Iterator[RedisServer]:
    """A password-protected server on TCP that simferry did not start."""
    server = RedisServer(tmp_path / "external", "s3cret-pw", 512 * 2**20, bind="127.0.0.1")
    server.start()
    yield server
    server.stop()


def anonymous(**where: object) -> redis.Redis:
    """A client without retries (redis-py's default retries a refused login for seconds)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(retry=Retry(NoBackoff(), 0), **where)  # type: ignore[arg-type]


def db_keys(transport: RedisTransport) -> list[str]:
    return sorted(k.decode() for k in transport.client.keys("*"))


# --- configuration, refused before anything starts ----------------------------------


def test_missing_redis_server_is_reported_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert RedisConfig().unavailable_reason() == (
        "redis-server is not installed; install the Debian package redis-server or pass "
        "--redis-url."
    )
    assert RedisConfig(redis_url="redis://example.org:6379/0").unavailable_reason() is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost:6379", "expected redis://"),
        ("redis://localhost:notaport/0", "Port could not be cast"),
        ("localhost:6379", "expected redis://"),
    ],
)
def test_malformed_url_is_a_usage_error(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=r"^Invalid redis-url: .*" + why):
        build({}, {"name": "local"}, {"name": "redis", "redis_url": url})


def test_password_stays_out_of_config_files_and_reprs() -> None:
    cfg = RedisConfig(redis_url="redis://:hunter2@db.example:6380/3")
    dumped = cfg.model_dump(mode="json")
    assert dumped["redis_url"] == "redis://db.example:6380/3"
    assert strip_password("unix:///tmp/r.sock?db=1&password=hunter2") == "unix:///tmp/r.sock?db=1"
    spec = cfg._external_spec("ns:")
    assert "hunter2" not in repr(spec) and spec.password_value() == "hunter2"
    assert pickle.loads(pickle.dumps(spec)).password_value() == "hunter2"


@pytest.mark.parametrize(
    ("options", "nodes", "message"),
    [
        ({"redis_url": "redis://h:1/0", "redis_bind": "0.0.0.0"}, 1, "apply only to a"),
        ({"redis_url": "redis://h:1/0", "redis_maxmemory": "1GiB"}, 1, "apply only to a"),
        ({"redis_url": "redis://127.0.0.1:1/0"}, 2, "other nodes cannot reach"),
        ({"redis_url": "unix:///tmp/x.sock"}, 2, "other nodes cannot reach"),
        ({"redis_bind": "127.0.0.1"}, 2, "loopback address that workers on other nodes"),
        ({"redis_bind": "192.0.2.1"}, 1, "Cannot listen on --redis-bind 192.0.2.1: it is not"),
        ({"redis_bind": "no-such-host.invalid"}, 1, "Cannot resolve --redis-bind"),
        ({"redis_maxmemory": "1MiB"}, 1, "--redis-maxmemory 1.0MiB is smaller than"),
    ],
)
def test_impossible_setups_are_refused_up_front(
    run_ctx: RunContext, options: dict[str, object], nodes: int, message: str
) -> None:
    ctx = RunContext(run_ctx.run_dir, "x", 64 * 2**20, nodes=nodes)
    with pytest.raises(UsageError, match=message):
        RedisConfig(**options).check(ctx)  # type: ignore[arg-type]
    assert servers_under(run_ctx.run_dir) == []


# --- the private server ---------------------------------------------------------------


def test_private_server_is_locked_down(run_ctx: RunContext) -> None:
    owner = RedisConfig().start(run_ctx)
    try:
        server = owner.server
        directory = run_ctx.run_dir / "redis"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert not (directory / "redis.conf").exists(), "the password file must be removed"
        (proc,) = servers_under(run_ctx.run_dir)
        assert server.password not in " ".join(proc.cmdline())
        assert len(server.password) >= 40
        # Nobody gets in without the password, even on the private socket.
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous(unix_socket_path=str(server.socket_path)).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous(unix_socket_path=str(server.socket_path), password="guess").ping()
        cfg = owner.client.config_get("*")
        assert cfg["save"] == "" and cfg["appendonly"] == "no"
        assert cfg["maxmemory-policy"] == "noeviction" and cfg["protected-mode"] == "yes"
        assert int(cfg["maxmemory"]) == int(run_ctx.data_bytes * 1.3) + 64 * 2**20
        assert cfg["port"] == "0", "no TCP listener on a one-node run"
    finally:
        owner.close()
    assert no_servers_left(run_ctx.run_dir)
    assert not (run_ctx.run_dir / "redis" / "redis.sock").exists()


def test_tcp_server_for_multi_node_runs_needs_the_password(run_ctx: RunContext) -> None:
    owner = RedisConfig(redis_bind="127.0.0.1").start(run_ctx)
    try:
        port = owner.server.port
        assert owner.config().url == f"redis://127.0.0.1:{port}/0"
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous(port=port).ping()
        owner.put(KEY, np.arange(5.0))
        worker = pickle.loads(pickle.dumps(owner.config())).connect()
        assert np.array_equal(worker.get(KEY), np.arange(5.0))
        worker.close()
    finally:
        owner.close()
    assert no_servers_left(run_ctx.run_dir)


def test_long_run_directory_falls_back_to_loopback_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    owner = RedisConfig().start(RunContext(deep, "long", 2**20))
    try:
        assert owner.config().url.startswith("redis://127.0.0.1:")
        owner.put(KEY, np.ones(3))
        assert np.array_equal(owner.get(KEY), np.ones(3))
    finally:
        owner.close()


# --- arrays and chunks ----------------------------------------------------------------


def test_large_arrays_are_split_into_chunks(owner: RedisTransport) -> None:
    arr = np.random.default_rng(0).standard_normal(1250)  # 10,000 bytes: 10 chunks of 1000
    owner.put(KEY, arr)
    assert len([k for k in db_keys(owner) if ":c:" in k]) == 10
    got = pickle.loads(pickle.dumps(owner.config())).connect().get(KEY)
    assert got.tobytes() == arr.tobytes()
    # Overwriting with fewer chunks leaves no stale chunk behind; deleting leaves nothing.
    owner.put(KEY, arr[:300])  # 2,400 bytes: 3 chunks
    assert len([k for k in db_keys(owner) if ":c:" in k]) == 3
    assert np.array_equal(owner.get(KEY), arr[:300])
    owner.put(KEY, np.zeros(0))
    assert [k for k in db_keys(owner) if ":c:" in k] == []
    owner.delete(KEY)
    assert db_keys(owner) == []


def test_chunk_boundaries_and_dtypes_round_trip(owner: RedisTransport) -> None:
    rng = np.random.default_rng(1)
    arrays = [
        np.arange(125, dtype=np.float64),  # exactly one chunk
        np.arange(126, dtype=np.float64),  # one byte-run over
        np.arange(250, dtype=np.float64),  # exactly two chunks
        rng.standard_normal((30, 40)).astype(np.float32),
        np.asfortranarray(rng.standard_normal((33, 17))),
        rng.standard_normal((40, 40))[::3, ::2],  # not contiguous
        (rng.standard_normal(300) + 1j).astype(np.complex128),
        np.arange(-500, 500, dtype=np.int16).reshape(10, 100),
        np.array(3.5),
        np.zeros((0, 7)),
        rng.standard_normal(1001).astype(">f8"),  # big-endian stays big-endian
    ]
    keys = [SampleKey(i, 0, "input") for i in range(len(arrays))]
    owner.put_many(list(zip(keys, arrays, strict=True)))
    for want, got in zip(arrays, owner.get_many(keys), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)


def test_object_arrays_are_refused(owner: RedisTransport) -> None:
    with pytest.raises(TransportError, match="plain numeric arrays"):
        owner.put(KEY, np.array([{"a": 1}], dtype=object))


def test_chunk_size_flag_is_validated() -> None:
    with pytest.raises(UsageError, match="redis-chunk-bytes"):
        build({}, {"name": "local"}, {"name": "redis", "redis_chunk_bytes": "1GiB"})
    cfg = build({}, {"name": "local"}, {"name": "redis", "redis_chunk_bytes": "64MiB"})
    assert cfg.transport.redis_chunk_bytes == 64 * 2**20  # type: ignore[attr-defined]


# --- an existing server ---------------------------------------------------------------


def test_external_server_is_used_not_stopped_and_only_our_keys_go(
    external: RedisServer, run_ctx: RunContext
) -> None:
    theirs = external.client(5.0)
    theirs.set("their:key", b"keep me")
    url = f"redis://:{external.password}@127.0.0.1:{external.port}/0"
    cfg = RedisConfig(redis_url=url, redis_chunk_bytes=1000)
    cfg.check(run_ctx)
    owner = cfg.start(run_ctx)
    owner.put_many([(KEY, np.arange(1000.0)), (WeightsKey(0), np.ones(4, np.float32))])
    worker = pickle.loads(pickle.dumps(owner.config())).connect()
    assert np.array_equal(worker.get(KEY), np.arange(1000.0))
    assert external.password not in worker.config().url
    worker.close()
    assert len(theirs.keys(f"simferry:{run_ctx.run_id}:*")) > 2
    owner.close()
    assert external.alive(), "simferry must never stop a server it did not start"
    assert theirs.keys("*") == [b"their:key"]
    assert owner.keys() == []
    theirs.close()


def test_password_can_come_from_the_environment(
    external: RedisServer, run_ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDISCLI_AUTH", external.password)
    cfg = RedisConfig(redis_url=f"redis://127.0.0.1:{external.port}/0")
    cfg.check(run_ctx)
    owner = cfg.start(run_ctx)
    try:
        owner.put(KEY, np.ones(2))
        assert np.array_equal(owner.get(KEY), np.ones(2))
    finally:
        owner.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_wrong_or_missing_password_is_one_clear_sentence(
    external: RedisServer, run_ctx: RunContext, password: str | None
) -> None:
    auth = f":{password}@" if password else ""
    cfg = RedisConfig(redis_url=f"redis://{auth}127.0.0.1:{external.port}/0")
    with pytest.raises(UsageError) as info:
        cfg.check(run_ctx)
    msg = str(info.value)
    assert msg.startswith(f"The Redis server at redis://127.0.0.1:{external.port}/0 rejected")
    assert "REDISCLI_AUTH" in msg and "wrong" not in msg.split("rejected")[0]
    assert external.alive()


def test_a_server_without_a_password_is_named_once(
    external: RedisServer, run_ctx: RunContext, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = external.client(5.0)
    theirs.config_set("requirepass", "")  # a server anyone on its network may read
    theirs.close()
    url = f"redis://127.0.0.1:{external.port}/0"
    RedisConfig(redis_url=url).check(run_ctx)
    RedisConfig(redis_url=url).check(run_ctx)  # compare checks each run: still one warning
    err = capsys.readouterr().err
    assert err.count("requires no password") == 1
    assert err.strip().endswith("anyone who can reach it can read this run's samples.")


def test_a_password_protected_server_gets_no_warning(
    external: RedisServer, run_ctx: RunContext, capsys: pytest.CaptureFixture[str]
) -> None:
    RedisConfig(redis_url=f"redis://:{external.password}@127.0.0.1:{external.port}/0").check(
        run_ctx
    )
    assert "password" not in capsys.readouterr().err


def test_unreachable_server_is_one_clear_sentence(run_ctx: RunContext) -> None:
    port = free_port("127.0.0.1")  # nothing listens there
    cfg = RedisConfig(redis_url=f"redis://127.0.0.1:{port}/0")
    t0 = time.monotonic()
    with pytest.raises(UsageError, match=r"^Cannot reach the Redis server at redis://127"):
        cfg.check(run_ctx)
    assert time.monotonic() - t0 < 10


def test_external_server_too_full_is_refused(external: RedisServer, run_ctx: RunContext) -> None:
    url = f"redis://:{external.password}@127.0.0.1:{external.port}/0"
    ctx = RunContext(run_ctx.run_dir, "big", 2**30)  # the server allows 512 MiB
    with pytest.raises(UsageError, match="free below its maxmemory but this run stores"):
        RedisConfig(redis_url=url).check(ctx)


# --- faults during a run ----------------------------------------------------------------


def test_server_out_of_memory_is_transport_full(run_ctx: RunContext) -> None:
    ctx = RunContext(run_ctx.run_dir, "oom", 2**20)
    owner = RedisConfig(redis_maxmemory="3MiB").start(ctx)
    try:
        owner.put(SampleKey(0, 0, "input"), np.ones(1000))
        with pytest.raises(TransportFullError, match=r"out of memory .*--redis-maxmemory"):
            owner.put_many(
                [
                    (SampleKey(0, 1, "input"), np.ones(2**19)),
                    (SampleKey(0, 1, "target"), np.ones(1)),
                ]
            )
        # The refused sample left nothing half-written; what was stored before is intact.
        assert owner.keys() == ["s000000/0000-input"]
        assert np.array_equal(owner.get(SampleKey(0, 0, "input")), np.ones(1000))
    finally:
        owner.close()


def test_server_killed_mid_run_fails_clearly_and_close_does_not_hang(
    run_ctx: RunContext,
) -> None:
    owner = RedisConfig().start(run_ctx)
    worker = owner.config().connect()
    worker.put(KEY, np.ones(10))
    (proc,) = servers_under(run_ctx.run_dir)
    proc.kill()
    proc.wait(10)
    for call in (lambda: worker.get(KEY), lambda: worker.put(KEY, np.ones(3))):
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="Lost the connection to the Redis server") as e:
            call()
        assert not isinstance(e.value, TransportFullError)
        assert "redis.log" in str(e.value) and time.monotonic() - t0 < 10
    t0 = time.monotonic()
    worker.close()
    owner.close()
    assert time.monotonic() - t0 < 5


def test_server_dies_with_a_killed_owner_process(tmp_path: Path) -> None:
    """SIGKILL allows no cleanup; the kernel still takes the server down with its parent."""
    script = (
        "import sys, time; from pathlib import Path\n"
        "from simferry.transports.base import RunContext\n"
        "from simferry.transports.redis import RedisConfig\n"
        "t = RedisConfig().start(RunContext(Path(sys.argv[1]), 'k', 2**20))\n"
        "print(t.server.proc.pid, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    server_pid = int(proc.stdout.readline())
    assert psutil.pid_exists(server_pid)
    proc.kill()
    proc.wait(10)
    assert no_servers_left(tmp_path)


# --- streaming index --------------------------------------------------------------------


def test_publications_arrive_once_in_order_and_wake_a_waiting_reader(
    owner: RedisTransport,
) -> None:
    from simferry.transports.index import END, Published

    reader = pickle.loads(pickle.dumps(owner.config())).connect().subscribe(2)
    t0 = time.monotonic()
    assert reader.poll(0.2) == [] and time.monotonic() - t0 >= 0.15
    owner.publish(Published(0, 0, 11))
    owner.publish(Published(0, 1, 12))
    assert reader.poll(1) == [Published(0, 0, 11), Published(0, 1, 12)]
    assert reader.poll(0) == []
    timer = threading.Timer(0.3, owner.publish, args=(Published(1, END, 10),))
    timer.start()
    t0 = time.monotonic()
    assert reader.poll(20) == [Published(1, END, 10)]
    assert time.monotonic() - t0 < 5, "a blocked reader must wake when something is published"
    timer.join()


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["phased", "streaming"])
def test_run_with_redis_verifies_every_sample_and_leaves_no_server(
    tmp_path: Path, mode: str
) -> None:
    args = ["--mode", mode, "--trainers", "2"]
    proc = simferry("run", "--transport", "redis", *SHOWN, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "40 samples verified by each of 2 trainer(s)" in proc.stdout
    run = only_run_dir(tmp_path / "runs")
    s = summary(run)
    assert s["status"] == "ok" and s["implementation"] == "Local + Redis"
    assert s["sim_io_s"] > 0 and s["train_io_s"] > 0
    assert sorted(os.listdir(run / "redis")) == ["redis.log"]
    assert "Redis is now ready to exit" in (run / "redis" / "redis.log").read_text()
    assert no_servers_left(tmp_path)


def test_compare_prints_a_redis_row(tmp_path: Path) -> None:
    proc = simferry("compare", "--transports", "filesystem,redis", *SHOWN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Local + Redis" in proc.stdout and "Local + file system" in proc.stdout
    assert no_servers_left(tmp_path)


def test_missing_redis_server_refuses_run_and_compare_skips(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    proc = subprocess.run(
        [sys.executable, "-m", "simferry", "run", "--transport", "redis", *SMALL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "simferry: error: redis-server is not installed; install the Debian package "
        "redis-server or pass --redis-url."
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "simferry", "compare", "--transports", "redis", *SMALL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "skipping Local + Redis: redis-server is not installed" in " ".join(proc.stderr.split())


def test_out_of_memory_run_fails_in_one_sentence_without_orphans(tmp_path: Path) -> None:
    # 0.66 MB of data passes the up-front check; the server's own ~1 MB does not fit.
    proc = simferry(
        "run", "--transport", "redis", *SMALL, "--redis-maxmemory", "700KB", cwd=tmp_path
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "is out of memory" in lines[0] and "--redis-maxmemory" in lines[0]
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "failed"
    assert no_servers_left(tmp_path)


def _start_run(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simferry", "run", "--transport", "redis", "--quiet", *extra],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_server(tmp_path: Path, proc: subprocess.Popen[str]) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        found = servers_under(tmp_path)
        if found and list(tmp_path.glob("runs/*/records.jsonl")):
            return found[0]
        time.sleep(0.02)
    raise AssertionError("the run's redis-server never appeared")


@pytest.mark.parametrize("fault", ["server killed", "ctrl-c"])
def test_run_survives_no_fault_with_an_orphan(tmp_path: Path, fault: str) -> None:
    proc = _start_run(tmp_path, "--num-sims", "2", "--grid-size", "16", "--step-seconds", "0.3")
    try:
        server = _wait_for_server(tmp_path, proc)
        time.sleep(0.5)  # simulations are writing
        if fault == "server killed":
            server.kill()
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    s = summary(only_run_dir(tmp_path / "runs"))
    if fault == "server killed":
        assert proc.returncode == 1
        assert "Lost the connection to the Redis server" in lines[0]
        assert s["status"] == "failed"
    else:
        assert proc.returncode == 130 and s["status"] == "interrupted"
    assert no_servers_left(tmp_path)


# --- the chunk reader (bulk.py): it parses replies itself -------------------------------
# Missing chunks, error replies, a chunk of the wrong size, logins (password, ACL user,
# database), a dropped connection, a pipeline longer than its window, threads and fork,
# and large arrays byte for byte.


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
        target_key = SampleKey(1, 2, "target")
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
    assert "refused reading s000001/0002-input: WRONGTYPE" in msg
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


def test_acl_user_and_database_from_the_url(external: RedisServer) -> None:
    admin = external.client(5.0)
    admin.acl_setuser("reader", enabled=True, passwords=["+user-pw"], keys="*", commands=["+@all"])
    url = f"redis://reader@127.0.0.1:{external.port}/3"
    spec = RedisSpec(url=url, password="user-pw", namespace="t:", chunk_bytes=100, where=url)
    transport = RedisTransport(spec)
    assert transport.bulk is not None
    arr = np.arange(100, dtype=np.int32)  # 4 chunks over TCP
    transport.put(KEY, arr)
    assert np.array_equal(transport.get(KEY), arr)
    transport.close()
    db3 = redis.Redis(host="127.0.0.1", port=external.port, password=external.password, db=3)
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


def test_a_server_that_stops_answering_is_a_timeout_not_a_hang(
    owner: RedisTransport, run_ctx: RunContext
) -> None:
    owner.put(KEY, np.arange(10.0))
    spec = owner.config()
    reader = BulkReader(spec.url, spec.password_value(), timeout=0.5)
    keys = chunk_keys(owner)
    (proc,) = servers_under(run_ctx.run_dir)
    proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            reader.fetch(keys, lambda i, size: None)
        assert time.monotonic() - t0 < 5 and reader.sock is None
    finally:
        proc.send_signal(signal.SIGCONT)
    assert np.array_equal(owner.get(KEY), np.arange(10.0))
