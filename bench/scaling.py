"""Ingest and timer cost against the number of open incidents: 1k, 10k, 100k (1M with --million).

    python -m bench.scaling [--mode default|quick|smoke] [--million] [--shared-loop] [--out FILE]

One embedded redis-server (AOF, fsync=always, unix socket) grows through the sizes. At each size K:

  open     incidents are opened through Processor.ingest until K are open (one alert each,
           `bench/policies/timers`: level 2 an hour after opening, so each holds one timer). Up to
           rate * window of them fall due in this step's timer window; the rest days later.
  timers   Scheduler.run on a shifted clock (bench/timers.py's) while those fall due at 500/s:
           lateness = commit time - due time, p50 / p99 / max. First, so that exactly K are open.
           Meanwhile the mix below runs in a process of its own, as `serve` runs ingest apart from
           its worker process; --shared-loop runs it on the scheduler's event loop instead (the
           engine with ESCALATION_WORKER_PROCESS=false).
  ingest   W webhooks through Processor.ingest, 32 at a time: the 3-alert fixture on
           `bench/policies/ingest`, 20 % new groups, 80 % repeats of groups sent before (as
           bench/ingest.py's mix; their new incidents add to the open ones). Webhooks/s, the engine's
           CPU per webhook (this process, getrusage) and redis-server's (/proc). These incidents are
           decided on a clock ten years ahead, so that their own timers never fall due in a window.

The cost should stay flat (or grow like log K): the report gives the ratio largest K / smallest K.
Only the engine's public API is used (Processor, Scheduler, RedisStore, EmbeddedRedis).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench import timers
from bench.incident_size import conflicts, run_async
from bench.repeats import Clock, cpu_s, group
from bench.standalone import Flat, Progress, add_ratios, cell, run_alone
from bench.timers import HOUR_MS, FixedClock, ShiftedClock, TimedProcessor, cpu_seconds, git_state
from engine import gctune
from engine.ingest.alertmanager import parse_payload
from engine.logs import configure_logging
from engine.metrics import Metrics
from engine.policy.loader import load_policies
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store.connect import connect
from engine.store.embedded import EmbeddedRedis
from engine.store.redis import RedisStore

BENCH = Path(__file__).resolve().parent
DAY_MS = 86_400_000
OPEN_BATCH = 250  # alerts per ingest call while opening the incidents due days later
NEW_SHARE = 0.2
CONCURRENCY = 32


@dataclass(frozen=True)
class Mode:
    sizes: tuple[int, ...]
    webhooks: int  # measured ingest webhooks per size
    timer_rate: int  # timers due per second in the window
    timer_window_s: float
    lead_s: float  # from the scheduler's start to the first due timer
    max_wait_s: float  # after the last due timer, at most
    seed_groups: int  # groups sent before the first measured mix, so that it has repeats to pick from


MODES = {
    "default": Mode((1_000, 10_000, 100_000), 1_000, 500, 2.0, 2.0, 20.0, 100),
    "quick": Mode((1_000, 10_000), 500, 500, 2.0, 1.0, 10.0, 50),
    "smoke": Mode((300, 1_000), 100, 500, 0.4, 0.5, 5.0, 20),
}


class FarClock:
    """Ten years ahead: the mix's incidents keep their timers out of every timer window."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + 3650 * DAY_MS


def label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


async def in_parallel(jobs: list[Any], workers: int) -> None:
    """Run the coroutine factories in `jobs`, `workers` at a time."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(workers)))


class Growing:
    """The incidents opened so far (their alert numbers), and the mix's groups sent so far."""

    def __init__(self, store: RedisStore, server: EmbeddedRedis | None) -> None:
        self.store = store
        self.redis_pid = server.pid if server is not None else None
        self.timer_policies = load_policies(BENCH / "policies" / "timers")
        self.ingest_policies = load_policies(BENCH / "policies" / "ingest")
        self.metrics = Metrics(CollectorRegistry())
        self.mix = Processor(store, lambda: self.ingest_policies, FarClock(), self.metrics)
        self.next_alert = itertools.count(1 << 60)  # fingerprints apart from the mix's (group i: i << 16)
        self.next_group = itertools.count()
        self.groups: list[int] = []
        self.rng = random.Random(20261211)

    async def open_batch(self, due_ms: int, n: int) -> None:
        """n incidents whose level 2 is due at due_ms (opened an hour before it)."""
        proc = Processor(self.store, lambda: self.timer_policies, FixedClock(due_ms - HOUR_MS), self.metrics)
        first = next(self.next_alert)
        alerts = [timers.alert(first)] + [timers.alert(next(self.next_alert)) for _ in range(n - 1)]
        result = await proc.ingest(alerts)
        if result.opened != n:
            raise RuntimeError(f"opened {result.opened} of {n} incidents")

    async def grow(self, to: int, window_base_ms: int, rate: int, most: int) -> tuple[int, int]:
        """Open incidents until `to` are open (as the store counts them): up to `most` due at `rate`/s
        from window_base_ms, the rest days later (in batches, one due instant per batch). Returns the
        window's (timers, milliseconds)."""
        wanted = max(0, to - await self.open_now())
        window = most  # always a full window, even when the mix already opened the rest of `to`
        window_ms = window * 1000 // rate
        far, far_base = max(0, wanted - window), window_base_ms + 2 * DAY_MS
        jobs: list[Any] = [
            (lambda b=b: self.open_batch(far_base + b * 1000, min(OPEN_BATCH, far - b * OPEN_BATCH)))
            for b in range(-(-far // OPEN_BATCH))
        ]
        jobs += [
            (lambda i=i: self.open_batch(window_base_ms + i * window_ms // window, 1)) for i in range(window)
        ]
        random.Random(to).shuffle(jobs)  # shards and due order independent of opening order
        await in_parallel(jobs, 8)
        return window, window_ms

    async def open_now(self) -> int:
        return sum((await self.store.open_counts()).values())

    def new_group(self) -> dict[str, object]:
        i = next(self.next_group)
        self.groups.append(i)
        return group(i)

    async def send(self, body: dict[str, object]) -> None:
        await self.mix.ingest(parse_payload(body)[1])

    async def seed(self, groups: int) -> None:
        """The mix's first groups, so that it has repeats to pick from; then each sent again (warm-up)."""
        await in_parallel([lambda: self.send(self.new_group()) for _ in range(groups)], CONCURRENCY)
        await in_parallel([lambda i=i: self.send(group(i)) for i in self.groups], CONCURRENCY)

    async def ingest(self, webhooks: int) -> dict[str, float | int]:
        pool = len(self.groups)  # repeats only of groups sent before this run (already committed)
        bodies = [
            self.new_group()
            if self.rng.random() < NEW_SHARE
            else group(self.groups[self.rng.randrange(pool)])
            for _ in range(webhooks)
        ]
        bodies.reverse()
        conflicts0, redis0, cpu0, t0 = (
            conflicts(self.metrics),
            cpu_seconds(self.redis_pid),
            cpu_s(),
            time.perf_counter(),
        )

        async def worker() -> None:
            while bodies:
                await self.send(bodies.pop())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall, cpu, redis_cpu = time.perf_counter() - t0, cpu_s() - cpu0, cpu_seconds(self.redis_pid) - redis0
        return {
            "ingest_webhooks": webhooks,
            "ingest_webhooks_per_s": round(webhooks / wall, 1),
            "ingest_cpu_ms_per_webhook": round(1000 * cpu / webhooks, 3),
            "ingest_redis_cpu_ms_per_webhook": round(1000 * redis_cpu / webhooks, 3),
            "ingest_commit_conflicts": int(conflicts(self.metrics) - conflicts0),
        }

    async def load_while(self, busy: "asyncio.Task[Any]") -> dict[str, float | int]:
        """The mix, CONCURRENCY at a time, for as long as `busy` runs: the load timers fire under."""
        sent, t0 = 0, time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while not busy.done():
                pool = len(self.groups)
                new = self.rng.random() < NEW_SHARE
                await self.send(self.new_group() if new else group(self.groups[self.rng.randrange(pool)]))
                sent += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return {"load_webhooks": sent, "load_webhooks_per_s": round(sent / (time.perf_counter() - t0), 1)}

    async def fire(
        self, mode: Mode, window_base_ms: int, window: int, window_ms: int, url: str, shared_loop: bool
    ) -> dict[str, float | int]:
        """Scheduler.run until the window's timers fired (bounded), on a clock that reaches the
        first due instant lead_s after it starts, while the mix keeps ingest busy: in a process of
        its own (bench/scaling_load.py), as `serve` runs ingest apart from its worker process; or,
        with shared_loop, on this event loop (ESCALATION_WORKER_PROCESS=false: the scheduler has a
        processor of its own and holds the ingest one's new decisions)."""
        load_proc = None
        if not shared_loop:
            load_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scaling_load", "--redis-url", url, "--seed",
                str(mode.seed_groups),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert load_proc.stdout is not None
            if await load_proc.stdout.readline() != b"ready\n":
                raise RuntimeError(f"the load process did not start (exit {await load_proc.wait()})")
        clock = ShiftedClock(window_base_ms - int(mode.lead_s * 1000) - Clock().now_ms())
        metrics = Metrics(CollectorRegistry())
        proc = TimedProcessor(self.store, lambda: self.timer_policies, clock, metrics)
        proc.expect(window)
        scheduler = Scheduler(self.store, proc, clock, metrics)
        gctune.tune()  # as `engine worker` does once started
        if shared_loop:
            scheduler.hold_ingest = self.mix.timers_first
        redis0, cpu0, t0 = cpu_seconds(self.redis_pid), time.process_time(), time.monotonic()
        load_cpu0 = cpu_seconds(load_proc.pid) if load_proc else 0.0
        task = asyncio.create_task(scheduler.run())

        async def all_fired() -> None:
            with contextlib.suppress(TimeoutError):  # bounded: report what fired by then
                async with asyncio.timeout(mode.lead_s + window_ms / 1000 + mode.max_wait_s):
                    await proc.all_fired.wait()

        waiting = asyncio.create_task(all_fired())
        try:
            if load_proc is None:
                load = await self.load_while(waiting)
            await waiting
        finally:
            scheduler.stop()
            await asyncio.wait_for(task, 30)
        if load_proc is not None:
            load_cpu = cpu_seconds(load_proc.pid) - load_cpu0
            assert load_proc.stdin is not None
            assert load_proc.stdout is not None
            load_proc.stdin.close()  # it stops and reports (communicate() would leave stdin open)
            out = await load_proc.stdout.read()
            await load_proc.wait()
            load = json.loads(out) | {"process_cpu_cores": round(load_cpu / (time.monotonic() - t0), 2)}
            load = {f"load_{k}" if k == "process_cpu_cores" else k: v for k, v in load.items()}
        wall = time.monotonic() - t0
        fired = sorted(proc.lateness_ms)
        if not fired:
            raise RuntimeError(f"none of {window} timers fired")
        return {
            "timers_due": window,
            "timers_fired": len(fired),
            "timers_lateness_p50_ms": timers.pct(fired, 50),
            "timers_lateness_p99_ms": timers.pct(fired, 99),
            "timers_lateness_max_ms": float(fired[-1]),
            "timers_scheduler_cpu_cores": round((time.process_time() - cpu0) / wall, 2),
            "timers_redis_cpu_cores": round((cpu_seconds(self.redis_pid) - redis0) / wall, 2),
            "timers_shared_loop": shared_loop,
            **{f"timers_{k}": v for k, v in load.items()},
        }


async def run(mode: Mode, progress: Progress, shared_loop: bool = False) -> Flat:
    configure_logging("warning", "json")
    most = round(mode.timer_rate * mode.timer_window_s)  # timers due in a window, at most
    flat: Flat = {
        "scaling.sizes": ",".join(map(str, mode.sizes)),
        "scaling.ingest_concurrency": CONCURRENCY,
        "scaling.ingest_new_share": NEW_SHARE,
        "scaling.timers_due_per_s": mode.timer_rate,
        "scaling.engine": git_state(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        async with EmbeddedRedis(Path(tmp) / "data", fsync="always") as server:
            store = RedisStore(await connect(server.url))
            try:
                g = Growing(store, server)
                for k in mode.sizes:
                    pre = f"scaling.open_{label(k)}"
                    window_base = Clock().now_ms() + DAY_MS
                    started = time.monotonic()
                    due, due_ms = await g.grow(k, window_base, mode.timer_rate, most)
                    open_s = time.monotonic() - started
                    memory = int((await store.client.info("memory"))["used_memory"])
                    figures: dict[str, float | int] = {
                        "open_incidents": await g.open_now(),
                        "open_s": round(open_s, 1),
                    }
                    if not g.groups:  # the mix's groups, for its repeats (a few more open incidents)
                        await g.seed(mode.seed_groups)
                    # the timers fire while the mix runs; then the mix alone, for its own cost
                    figures |= await g.fire(mode, window_base, due, due_ms, server.url, shared_loop)
                    figures |= await g.ingest(mode.webhooks)
                    figures["open_incidents_after"] = await g.open_now()
                    figures["redis_used_memory_mb"] = round(memory / 2**20, 1)
                    flat |= {f"{pre}.{name}": v for name, v in figures.items()}
                    progress(
                        f"scaling K={k:,}: {figures['open_incidents']:,} open (opened in {open_s:.0f} s); "
                        f"ingest {figures['ingest_webhooks_per_s']} webhooks/s, "
                        f"{figures['ingest_cpu_ms_per_webhook']} CPU ms/webhook; timers lateness p99 "
                        f"{figures['timers_lateness_p99_ms']:.0f} ms ({figures['timers_fired']}/{due})"
                    )
            finally:
                await store.close()
    lo, hi = label(min(mode.sizes)), label(max(mode.sizes))
    names = ("ingest_cpu_ms_per_webhook", "ingest_webhooks_per_s", "timers_lateness_p99_ms")
    add_ratios(flat, lambda k, name: f"scaling.open_{k}.{name}", lo, hi, names,
               lambda name: f"scaling.ratio_{hi}_to_{lo}.{name}")  # fmt: skip
    return flat


def run_part(mode: str, progress: Progress) -> Flat:
    """For `python -m bench`: default (1k, 10k, 100k) ≤ 150 s, quick (1k, 10k) ≤ 30 s, smoke ≤ 8 s."""
    return run_async(lambda: run(MODES[mode], progress))


def markdown(flat: Flat) -> list[str]:
    sizes = [int(s) for s in str(flat.get("scaling.sizes", "")).split(",") if s]
    if not sizes:
        return []

    def g(k: int, name: str) -> str:
        return cell(flat.get(f"scaling.open_{label(k)}.{name}"))

    head = ["open incidents", "ingest webhooks/s", "engine CPU ms / webhook", "redis CPU ms / webhook",
            "commit conflicts", "timers fired", "ingest meanwhile webhooks/s", "lateness p50 ms", "p99 ms",
            "max ms", "timers process CPU cores", "load process CPU cores",
            "Redis used_memory MB"]  # fmt: skip
    rows = [[g(k, "open_incidents"), g(k, "ingest_webhooks_per_s"),
             f"**{g(k, 'ingest_cpu_ms_per_webhook')}**",
             g(k, "ingest_redis_cpu_ms_per_webhook"), g(k, "ingest_commit_conflicts"),
             f"{g(k, 'timers_fired')} / {g(k, 'timers_due')}", g(k, "timers_load_webhooks_per_s"),
             g(k, "timers_lateness_p50_ms"),
             f"**{g(k, 'timers_lateness_p99_ms')}**", g(k, "timers_lateness_max_ms"),
             g(k, "timers_scheduler_cpu_cores"), g(k, "timers_load_process_cpu_cores"),
             g(k, "redis_used_memory_mb")] for k in sizes]  # fmt: skip
    lo, hi = label(min(sizes)), label(max(sizes))
    r = f"scaling.ratio_{hi}_to_{lo}."
    if flat.get(f"scaling.open_{lo}.timers_shared_loop"):
        load = (
            "in the same process and event loop (`--shared-loop`: the engine with "
            "ESCALATION_WORKER_PROCESS=false; the scheduler holds new ingest decisions while it fires)"
        )
    else:
        load = (
            "in a process of its own (`bench/scaling_load.py`), as `serve` runs ingest apart from its "
            "worker process (`--shared-loop` runs it on the timers' event loop instead)"
        )
    return [
        "## Scaling: ingest and timers against the number of open incidents",
        "",
        "`bench/scaling.py`: one embedded redis-server (fsync=always) grows to each size through "
        "`Processor.ingest` (one-alert incidents, each with one pending timer); then, at that size, "
        f"`Scheduler.run` while {_n(flat.get('scaling.timers_due_per_s'))} timers/s fall due and, "
        f"{load}, the ingest mix runs flat out, 32 webhooks at a time (the 3-alert fixture on "
        "`bench/policies/ingest`, 20 % new groups, 80 % repeats); then "
        f"{_n(flat.get('scaling.open_' + lo + '.ingest_webhooks'))} webhooks of the mix alone, for "
        "its own cost. Process CPU while the timers fired: the timers' process, and the load's. The cost "
        f"should stay flat: {hi} / {lo} = **{_n(flat.get(r + 'ingest_cpu_ms_per_webhook'))}** for CPU per "
        f"webhook, **{_n(flat.get(r + 'timers_lateness_p99_ms'))}** for timer lateness p99.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] * len(head)) + "|",
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
    ]


def _n(v: object) -> str:
    return "—" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=list(MODES), default="default")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 open incidents (~10 min more)")
    parser.add_argument("--shared-loop", action="store_true", help="ingest load on the timers' event loop")
    parser.add_argument("--out", type=Path, help="also write the JSON there")
    args = parser.parse_args()
    mode = MODES[args.mode]
    if args.million:
        mode = dataclasses.replace(mode, sizes=(*mode.sizes, 1_000_000))
    shared = args.shared_loop
    return run_alone("scaling", lambda progress: run_async(lambda: run(mode, progress, shared)), markdown,
                     args.out, "redis-server stopped, temporary data removed")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
