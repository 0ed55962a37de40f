"""The engine replicas (`python -m engine serve` on one external Redis) and the monkey that kills them.

Each replica keeps its port across restarts, so the driver's list of URLs never changes. The
monkey SIGKILLs a running replica (ready or still starting) at random moments and restarts it a
random moment later; it never takes down the last ready replica, as a deployment with a
PodDisruptionBudget would not lose its last pod to a rolling failure.
"""

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis.asyncio

from bench.chaos.inflight import held_by
from bench.chaos.sinks import Key
from engine.store.embedded import die_with_parent
from tests.servers import terminate

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Kill:
    at: float  # wall clock
    replica: int
    was_ready: bool  # killed while serving (else while still starting)
    held: tuple[Key, ...] = ()  # the messages its delivery consumer had pending at the kill


class Replica:
    """One `python -m engine serve` process slot; its log accumulates across restarts."""

    def __init__(self, index: int, policies: Path, redis_url: str, env: dict[str, str], log: Path) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.policies = policies
        self.redis_url = redis_url
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.starts = 0
        self.spawned_at = 0.0
        self.start_s: list[float] = []  # spawn -> ready, per start that got there

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        cmd = [
            sys.executable, "-m", "engine", "serve",
            "--policies", str(self.policies),
            "--listen", f"127.0.0.1:{self.port}",
            "--redis-url", self.redis_url,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            # die_with_parent: a driver that is itself killed leaves no replica behind
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
            )
        self.ready = False
        self.starts += 1
        self.spawned_at = time.monotonic()

    async def wait_ready(self, session: aiohttp.ClientSession) -> bool:
        """Poll /-/ready; False when the process died first (killed while starting)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        proc = self.proc
        while time.monotonic() < deadline and proc is self.proc and self.running:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/-/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        self.ready = proc is self.proc and self.running
                        self.start_s.append(time.monotonic() - self.spawned_at)
                        return self.ready
            await asyncio.sleep(0.05)
        if proc is self.proc and self.running:
            raise RuntimeError(f"replica {self.index} not ready within {READY_TIMEOUT_S}s: see {self.log}")
        return False

    def kill(self) -> int:
        """SIGKILL; returns the process id it had (0: it was not running)."""
        self.ready = False
        if self.proc is None or self.proc.poll() is not None:
            return 0
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return self.proc.pid

    def stop(self) -> None:
        self.ready = False
        if self.proc is not None:
            terminate(self.proc, 10)


class Monkey:
    """Kills replicas at random moments, restarts them a random moment later."""

    def __init__(
        self,
        replicas: list[Replica],
        session: aiohttp.ClientSession,
        redis_client: "redis.asyncio.Redis",
        rng: random.Random,
        every_s: tuple[float, float],
        down_s: tuple[float, float],
        starting_share: float,
    ) -> None:
        self.replicas = replicas
        self.redis = redis_client
        self.session = session
        self.rng = rng
        self.every_s = every_s
        self.down_s = down_s
        self.starting_share = starting_share  # of kills, aimed at a replica still starting (if any)
        self.kills: list[Kill] = []
        self.failed_starts = 0
        self._restarts: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.every_s))
                break
            starting = self.rng.random() < self.starting_share  # drawn once: waiting must not redraw it
            victim = self._victim(starting)
            while victim is None and not stop.is_set():  # nobody may be killed now: soon
                await asyncio.sleep(0.2)
                victim = self._victim(starting)
            if victim is None:
                break
            at, was_ready = time.time(), victim.ready
            pid = victim.kill()
            held = await held_by(self.redis, pid) if pid else []
            self.kills.append(Kill(at, victim.index, was_ready, tuple(held)))
            task = asyncio.create_task(self._restart(victim, self.rng.uniform(*self.down_s)))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
        await self.settle()

    def _victim(self, starting: bool) -> Replica | None:
        """A serving replica (that is where pages are in flight), or with `starting` one still
        starting if there is one; never the last ready one. None: nobody may be killed now."""
        candidates = [
            r for r in self.replicas if r.running and any(o.ready for o in self.replicas if o is not r)
        ]
        serving = [r for r in candidates if r.ready]
        not_ready = [r for r in candidates if not r.ready]
        if starting and not_ready:
            return self.rng.choice(not_ready)
        return self.rng.choice(serving) if serving else None

    async def _restart(self, replica: Replica, after_s: float) -> None:
        await asyncio.sleep(after_s)
        for _ in range(5):
            replica.spawn()
            if await replica.wait_ready(self.session):
                return
            assert replica.proc is not None
            if replica.proc.returncode == -signal.SIGKILL:
                return  # killed again while starting: that kill restarts it
            self.failed_starts += 1  # it exited by itself: try again, and say so in the report
            await asyncio.sleep(0.5)
        raise RuntimeError(f"replica {replica.index} failed to start 5 times: see {replica.log}")

    async def settle(self) -> None:
        """Every replica running and ready again (kills stopped)."""
        while self._restarts:
            await asyncio.gather(*self._restarts)
        for r in self.replicas:
            if not r.running:
                await self._restart(r, 0)
            elif not r.ready:
                await r.wait_ready(self.session)
