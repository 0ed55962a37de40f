"""The worker process: `serve` runs due timers, delivery and retention in a child process of its
own, so a storm of webhooks saturating the HTTP process cannot make a due escalation or a page
wait for its event loop (bench `scaling`: timer p99 67-84 ms when they shared one loop).

Parent and child talk over a socketpair, one line per message:
  parent -> child  `o` an outbox entry was written; `t<ms>` a timer was set for ms;
                   `r` policies were reloaded; `m` send your metrics
  child -> parent  `ready` once everything runs; `m<length>` then that many bytes of metrics
The wakes only save latency: without them the child still finds the work at its next poll, as
any replica does. End of file on the child's side means the parent is gone: it stops.
"""

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Sequence

import structlog

from engine.errors import EngineError
from engine.store.embedded import die_with_parent

log = structlog.get_logger(__name__)
READY_TIMEOUT_S = 60.0  # the child imports the engine and opens its store before it is ready
SCRAPE_TIMEOUT_S = 2.0
RESTART_DELAY_S = 1.0


class WorkerProcess:
    """The parent's side: starts the child, restarts it if it dies, and forwards wakes."""

    def __init__(self, argv: Sequence[str], grace_s: float, on_restart: Callable[[], None]) -> None:
        self.argv = list(argv)  # the child's command line, without --control-fd
        self.grace_s = grace_s
        self.on_restart = on_restart
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._metrics: asyncio.Future[bytes] | None = None
        self._scrape_lock = asyncio.Lock()
        self._outbox = False
        self._timer_ms: int | None = None
        self._flush_scheduled = False
        self._stopping = False

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self._ready.is_set()

    async def start(self) -> None:
        """Start the child and wait until it is ready; EngineError if it does not get there."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-supervisor")

    async def _spawn(self) -> None:
        if self._writer is not None:  # the line to a worker that exited
            self._writer.close()
        ours, theirs = socket.socketpair()
        self._ready.clear()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--control-fd",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                preexec_fn=die_with_parent(),  # a SIGKILLed parent takes its worker with it
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._reader_task = asyncio.create_task(self._read(reader), name="worker-reader")
        exited = asyncio.create_task(self.proc.wait())
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({exited, ready}, timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
        for task in (exited, ready):
            task.cancel()
        if ready not in done:
            await self._kill()
            why = f"exited with code {self.proc.returncode}" if exited in done else "timed out"
            raise EngineError(f"the worker process (timers, delivery) did not start: {why}; see its log")
        log.info("worker_started", pid=self.proc.pid)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                if line == b"ready\n":
                    self._ready.set()
                elif line.startswith(b"m"):
                    body = await reader.readexactly(int(line[1:]))
                    if self._metrics is not None and not self._metrics.done():
                        self._metrics.set_result(body)

    async def _supervise(self) -> None:
        """A worker that exits on its own is logged and started again: timers and pages wait in
        Redis meanwhile, and nothing is lost."""
        while self.proc is not None:
            code = await self.proc.wait()
            if self._stopping:
                return  # stop() cancels this task before it signals the child; a guard all the same
            log.error("worker_exited", code=code, restart_in_s=RESTART_DELAY_S)
            self.on_restart()
            await asyncio.sleep(RESTART_DELAY_S)
            with contextlib.suppress(EngineError, OSError):  # logged; the loop tries again
                await self._spawn()

    def wake_outbox(self) -> None:
        self._outbox = True
        self._schedule_flush()

    def wake_timer(self, due_ms: int | None) -> None:
        if due_ms is not None and (self._timer_ms is None or due_ms < self._timer_ms):
            self._timer_ms = due_ms
            self._schedule_flush()

    def reload(self) -> None:
        self._send(b"r\n")

    def _schedule_flush(self) -> None:
        # the commits of one event-loop turn share one write
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        message = b""
        if self._outbox:
            message += b"o\n"
        if self._timer_ms is not None:
            message += b"t%d\n" % self._timer_ms
        self._outbox, self._timer_ms = False, None
        self._send(message)

    def _send(self, message: bytes) -> None:
        if message and self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(message)

    async def scrape(self) -> bytes | None:
        """The child's metrics in the OpenMetrics text format; None if it cannot answer now."""
        if not self.up:
            return None
        async with self._scrape_lock:
            self._metrics = asyncio.get_running_loop().create_future()
            self._send(b"m\n")
            try:
                async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                    return await self._metrics
            except TimeoutError:
                log.warning("worker_metrics_timeout", timeout_s=SCRAPE_TIMEOUT_S)
                return None
            finally:
                self._metrics = None

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace_s):
                    await self.proc.wait()
        await self._kill()

    async def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


class Control:
    """The child's side: acts on the parent's lines until the parent goes away."""

    def __init__(
        self,
        fd: int,
        *,
        outbox: Callable[[], None],
        timer: Callable[[int], None],
        reload: Callable[[], None],
        metrics: Callable[[], bytes],
        parent_gone: Callable[[], None],
    ) -> None:
        self.fd = fd
        self.outbox, self.timer, self.reload = outbox, timer, reload
        self.metrics, self.parent_gone = metrics, parent_gone
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> asyncio.StreamReader:
        reader, self._writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=self.fd))
        return reader

    def ready(self) -> None:
        assert self._writer is not None
        self._writer.write(b"ready\n")

    async def serve(self, reader: asyncio.StreamReader) -> None:
        assert self._writer is not None
        try:
            while line := await reader.readline():
                kind, arg = line[:1], line[1:].strip()
                if kind == b"o":
                    self.outbox()
                elif kind == b"t" and arg.isdigit():
                    self.timer(int(arg))
                elif kind == b"r":
                    self.reload()
                elif kind == b"m":
                    body = self.metrics()
                    self._writer.write(b"m%d\n" % len(body) + body)
        except ConnectionError:
            pass
        finally:
            self._writer.close()
        self.parent_gone()


def worker_argv(policies: str, redis_url: str) -> list[str]:
    return [sys.executable, "-m", "engine", "worker", "--policies", policies, "--redis-url", redis_url]
