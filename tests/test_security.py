"""Security: private files, tamper-proof data directories, no foreign pickles, closed servers."""

from __future__ import annotations

import ast
import os
import stat
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from simferry import plugins
from simferry.config import build
from simferry.engine.retry import task_failure
from simferry.engine.run import check_run
from simferry.errors import UsageError
from simferry.transports.base import RunContext, SampleKey

from .helpers import only_run_dir, simferry
from .leaks import kill_session, session_processes, start_cli, wait_gone

SMALL = ["--num-sims", "2", "--grid-size", "16", "--step-seconds", "0", "--quiet"]


def assert_private(root: Path) -> int:
    """Every directory under ``root`` 0700-or-less, every file 0600-or-less; returns count."""
    count = 0
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {oct(mode)}"
        count += 1
    return count


@pytest.mark.integration
def test_run_directory_and_kept_data_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--transport", "filesystem", "--data-dir", str(data), "--keep-data", *SMALL]
    simferry("run", *args, cwd=tmp_path, check=True)
    run_dir = only_run_dir(tmp_path / "runs")
    assert assert_private(run_dir) >= 6  # config, environment, records, summary, weights
    assert assert_private(data) >= 2 * 2 * 10  # every sample array


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "redis"])
def test_live_run_data_and_sockets_are_private(tmp_path: Path, transport: str) -> None:
    """Checked while the run is live: shm segments, redis.conf (its password), the socket."""
    reason = plugins.transports()[transport](name=transport).unavailable_reason()
    if reason:
        pytest.skip(reason)
    slow = ["--num-sims", "2", "--grid-size", "16", "--step-seconds", "0.3", "--quiet"]
    proc = start_cli("run", "--transport", transport, *slow, cwd=tmp_path)
    try:
        shm = Path("/dev/shm")
        deadline = time.monotonic() + 60
        checked = 0
        while time.monotonic() < deadline and proc.poll() is None and checked < 3:
            live = list(shm.glob(f"simferry-*-{proc.pid}")) + list(
                (tmp_path / "runs").glob("*/redis")
            )
            if live and any(p.is_dir() and any(p.iterdir()) for p in live):
                for path in live:
                    assert_private(path)
                checked += 1
            time.sleep(0.1)
        assert checked, "never saw the run's live data"
        proc.communicate(timeout=120)
        assert proc.returncode == 0
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)


def test_private_server_listens_locally_with_a_random_password(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    from simferry.transports.redis import RedisConfig

    cfg = RedisConfig()
    if cfg.unavailable_reason():
        pytest.skip(cfg.unavailable_reason() or "")
    import redis

    passwords = []
    for n in range(2):
        run_dir = tmp_path / f"run{n}"
        run_dir.mkdir()
        owner = cfg.start(RunContext(run_dir, f"sec{n}", 2**20))
        try:
            server = owner.server  # type: ignore[attr-defined]
            assert server.proc is not None
            listening = [
                c for c in psutil.Process(server.proc.pid).net_connections("inet") if c.laddr
            ]
            # One node: a Unix socket only (no TCP port at all, loopback at most).
            assert all(_loopback(c.laddr.ip) for c in listening), listening
            sock = server.socket_path
            assert stat.S_ISSOCK(sock.stat().st_mode)
            assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
            # Its directory is private; the config holding the password is gone once up.
            assert stat.S_IMODE(server.directory.stat().st_mode) & 0o077 == 0
            assert not server.conf_path.exists()
            anonymous = redis.Redis(unix_socket_path=str(sock))
            with pytest.raises(redis.exceptions.AuthenticationError):
                anonymous.ping()
            anonymous.close()
            passwords.append(server.password)
        finally:
            owner.close()
        assert server.proc.poll() is not None, "the run's redis-server must stop with it"
    assert passwords[0] != passwords[1] and min(len(p) for p in passwords) >= 32


@pytest.mark.integration
def test_parsl_interchange_listens_on_loopback_only(tmp_path: Path) -> None:
    """With the local provider nothing Parsl starts is reachable from other hosts."""
    reason = plugins.launchers()["parsl"](name="parsl").unavailable_reason()
    if reason:
        pytest.skip(reason)
    slow = ["--num-sims", "1", "--grid-size", "16", "--step-seconds", "1", "--quiet"]
    proc = start_cli("run", "--launcher", "parsl", *slow, cwd=tmp_path)
    try:
        listening: list[str] = []
        deadline = time.monotonic() + 120
        while not listening and proc.poll() is None and time.monotonic() < deadline:
            for p in session_processes(proc.pid):
                try:
                    if "interchange" not in " ".join(p.cmdline()):
                        continue
                    conns = p.net_connections("inet")
                except psutil.Error:
                    continue
                listening += [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
            time.sleep(0.2)
        assert listening, "never saw the interchange listen"
        assert all(_loopback(ip) for ip in listening), listening
        proc.communicate(timeout=180)
        assert proc.returncode == 0
        assert wait_gone(proc.pid, timeout=30) == []
    finally:
        kill_session(proc.pid)


def _loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


class _Payload:
    """Would create ``marker`` when unpickled; nothing simferry reads may run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("factory", ["filesystem", "shm"])
def test_a_planted_pickle_is_never_loaded(factory: str, run_ctx: RunContext) -> None:
    from .conformance.conftest import FACTORIES

    owner = FACTORIES[factory](run_ctx).start(run_ctx)
    marker = run_ctx.run_dir / "pwned"
    try:
        key = SampleKey(0, 0, "input")
        owner.put(key, np.zeros(4))
        path = owner.root / (key.name() + ".npy")  # type: ignore[attr-defined]
        evil = np.empty(1, dtype=object)
        evil[0] = _Payload(marker)
        np.save(path, evil, allow_pickle=True)  # another user's (or a stale run's) file
        with pytest.raises(ValueError, match=r"pickle|Python objects") as info:
            owner.get(key)
        assert not marker.exists()
        # What the run prints: one sentence with one full stop at its end.
        said = str(task_failure("trainer 0", info.value))
        assert said.endswith("never unpickled.") and not said.endswith("..")
    finally:
        owner.close()


UNPICKLERS = {"loads", "load", "Unpickler"}
#: Where simferry unpickles, and why that is safe: only this run's own task results --
#: pass-by-value blobs (futures) and ProxyStore's small proxies, which travel the same
#: way; the arrays a proxy resolves to are read with ``np.load(allow_pickle=False)``.
ALLOWED_UNPICKLING = {"transports/futures.py", "transports/proxystore/__init__.py"}


def test_no_code_path_unpickles_foreign_data() -> None:
    """Static guard over every module, including transports added later.

    ``pickle``/``torch.load`` without ``weights_only=True`` and ``np.load`` without
    ``allow_pickle=False`` are refused outside the reviewed list above.
    """
    root = Path(plugins.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = ast.unparse(node.func.value)
            name = node.func.attr
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            bad = (
                (owner in {"pickle", "cloudpickle", "dill"} and name in UNPICKLERS)
                or (owner == "torch" and name == "load" and kwargs.get("weights_only") != "True")
                or (owner in {"np", "numpy"} and name == "load" and kwargs.get("allow_pickle") != "False")
                or kwargs.get("allow_pickle") == "True"
            )  # fmt: skip
            if bad and rel not in ALLOWED_UNPICKLING:
                offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert offenders == []


def test_futures_blobs_round_trip_only_arrays() -> None:
    """The one unpickling path reads what a task of this run produced with ``drain``."""
    from simferry.transports.futures import FuturesTransport, unpack

    t = FuturesTransport()
    t.put(SampleKey(1, 2, "input"), np.ones(3))
    blob = t.drain()
    assert set(unpack(blob)) == {"s000001/0002-input"}


# --- the data directory a user names must not be open to tampering


def _check(data_dir: Path) -> None:
    cfg = build(
        {"num_sims": 1, "grid_size": 16},
        {"name": "local"},
        {"name": "filesystem", "data_dir": str(data_dir)},
        runs_dir=data_dir.parent / "runs",
    )
    check_run(cfg)


def test_world_writable_data_dir_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="writable by every user and has no sticky bit"):
        _check(shared)
    with pytest.raises(UsageError, match="no sticky bit"):
        _check(shared / "not-yet-created")  # the nearest existing parent is what counts
    shared.chmod(0o1777)  # like /tmp: others cannot rename simferry's directory away
    _check(shared)


def test_data_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UsageError, match="belongs to another user"):
        _check(theirs)
    _check(tmp_path / "mine")
