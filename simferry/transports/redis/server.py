"""The private ``redis-server`` a run starts for itself, and stops on every exit path.

Security: the server listens on a Unix socket inside the run directory (mode 0700, so only
this user can even reach it) or, for multi-node runs, on a TCP address with
``protected-mode yes``; either way it requires a random password. The password travels in
a 0600 config file inside the private run directory -- never on the command line, where
``ps`` would show it -- and the file is removed once the server has read it. Nothing is
persisted: no RDB snapshots, no AOF.

Orphans: the server runs in its own process group (Ctrl-C in the terminal reaches
simferry, which shuts it down cleanly, not the server mid-request; it stays in simferry's
session, where leak checks look), is told by the kernel to exit if its parent dies
(``PR_SET_PDEATHSIG``, Linux), and a finalizer kills it if the interpreter exits without
``stop``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import redis

from simferry.transports.common import die_with_parent, free_port, make_client
from simferry.transports.exceptions import TransportError

#: Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)


class RedisServer:
    """One ``redis-server`` process owned by this run.

    ``bind`` is ``None`` for a Unix socket in ``directory``, else the TCP address to
    listen on; ``url`` is how clients reach it (the password is kept separately).
    """

    def __init__(
        self,
        directory: Path,
        password: str,
        maxmemory: int,
        bind: str | None = None,
        host: str | None = None,
        executable: str = "redis-server",
    ) -> None:
        self.directory = directory.resolve()
        self.password = password
        self.maxmemory = maxmemory
        self.bind = bind
        self.host = host or bind
        self.executable = executable
        self.socket_path = self.directory / "redis.sock"
        self.log_path = self.directory / "redis.log"
        self.conf_path = self.directory / "redis.conf"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        if self.host is None:
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    def _config(self) -> str:
        lines = [
            f"port {self.port}",
            "protected-mode yes",
            f'requirepass "{self.password}"',
            'save ""',
            "appendonly no",
            f'dir "{self.directory}"',
            f'logfile "{self.log_path}"',
            f"maxmemory {self.maxmemory}",
            "maxmemory-policy noeviction",
            "daemonize no",
            "always-show-logo no",
        ]
        if self.bind is None:
            lines += [f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        else:
            lines.append(f"bind {self.bind}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and return once it answers PING; raise ``TransportError`` else."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.bind is None and len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise TransportError(
                f"The Unix socket path {self.socket_path} is too long for the kernel; use a "
                "shorter --runs-dir or pass --redis-bind 127.0.0.1."
            )
        for attempt in range(5):
            if self.bind is not None:
                self.port = free_port(self.bind)
            try:
                self._start_once(timeout)
                return
            except _PortTaken:
                if attempt == 4:
                    raise TransportError(
                        f"redis-server could not find a free port on {self.bind}; try again."
                    ) from None

    def _start_once(self, timeout: float) -> None:
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._config())
        on_main = threading.current_thread() is threading.main_thread()
        try:
            self.proc = subprocess.Popen(
                [self.executable, str(self.conf_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=0,
                umask=0o077,  # its log and socket are private whatever our caller's umask
                # The death signal follows the *thread* that forked: only ask for it from
                # the main thread, which lives as long as the run.
                preexec_fn=die_with_parent if on_main and sys.platform == "linux" else None,
            )
        except OSError as exc:
            self.conf_path.unlink(missing_ok=True)
            raise TransportError(f"Could not start {self.executable}: {exc.strerror}.") from None
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            self.conf_path.unlink(missing_ok=True)  # it holds the password

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        client = self.client(socket_timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    last = self.last_log_line()
                    if "Address already in use" in last:
                        raise _PortTaken
                    raise TransportError(
                        f"redis-server exited during start-up: {last or 'no log'} "
                        f"(see {self.log_path})."
                    )
                try:
                    client.ping()
                    return
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise TransportError(
                            f"redis-server did not answer within {timeout:.0f} s "
                            f"(see {self.log_path}); the machine may be overloaded."
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def client(self, socket_timeout: float) -> redis.Redis:
        return make_client(self.url, self.password, socket_timeout=socket_timeout)

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        # Drop redis' "pid:role date time level" prefix: the message is what helps.
        return lines[-1].split(" ", 4)[-1].lstrip("#*-. ") if lines else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL; never raises, never hangs."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            client = self.client(socket_timeout=2.0)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client.shutdown(nosave=True)
            client.close()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    proc.wait(STOP_TIMEOUT_S)
                    break
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT_S)
        if self._finalizer is not None:
            self._finalizer.detach()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()
        self.conf_path.unlink(missing_ok=True)


class _PortTaken(Exception):
    """The chosen port was taken between probing and the server binding it."""
