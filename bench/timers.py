"""Escalation timer lateness: K open incidents whose level 2 falls due across a window, fired by Scheduler.

    python bench/timers.py                        # 10,000 incidents due across 20 s, fsync=always
    python bench/timers.py --incidents 100000     # a few minutes
    python bench/timers.py --profile bench/results/timers-profile.txt   # py-spy the firing phase

Everything goes through the engine's own code against a real redis-server (the embedded one,
AOF with the chosen fsync, unix socket): Processor.ingest opens the incidents, Scheduler.run
fires them. Each incident is opened with a clock set one hour before its due instant, so the
policy's level 2 (`after: 1h`) is due exactly there; due instants are spread evenly across
--spread seconds. The scheduler then runs on the real clock shifted by a constant, so the first
timer is due --lead seconds after it starts: lateness = commit time - due time, in real time.
"""

import argparse
import asyncio
import contextlib
import datetime
import functools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from engine import gctune  # noqa: E402
from engine.alerts import Alert, AlertStatus  # noqa: E402
from engine.events import Decision  # noqa: E402
from engine.logs import configure_logging  # noqa: E402
from engine.metrics import Metrics  # noqa: E402
from engine.policy.loader import load_policies  # noqa: E402
from engine.policy.models import PolicySet  # noqa: E402
from engine.processor import Processor  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402
from engine.store import keys  # noqa: E402
from engine.store.base import DueTimer  # noqa: E402
from engine.store.connect import connect  # noqa: E402
from engine.store.embedded import EmbeddedRedis  # noqa: E402
from engine.store.redis import RedisStore  # noqa: E402

HOUR_MS = 3_600_000  # level 2's `after` in bench/policies/timers


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


class ShiftedClock:
    """The system clock plus a constant: real elapsed time, with the due instants where we want them."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class TimedProcessor(Processor):
    """Records, for every timer that changed its incident, commit time - due time."""

    def expect(self, k: int) -> None:
        self.k = k
        self.lateness_ms: list[int] = []
        self.fire_seconds = 0.0
        self.last_fire_ms = 0
        self.all_fired = asyncio.Event()

    async def fire(self, incident_id: str, due_ms: int) -> Decision:
        started = time.perf_counter()
        d = await super().fire(incident_id, due_ms)
        self.fire_seconds += time.perf_counter() - started
        if d.changed:
            self._fired(due_ms)
        return d

    async def fire_due(self, due: list[DueTimer]) -> tuple[list[tuple[DueTimer, Decision]], list[DueTimer]]:
        started = time.perf_counter()
        done, rest = await super().fire_due(due)
        self.fire_seconds += (time.perf_counter() - started) * len(done)
        for t, _ in done:
            self._fired(t.due_ms)
        return done, rest

    def _fired(self, due_ms: int) -> None:
        self.last_fire_ms = self.clock.now_ms()
        self.lateness_ms.append(self.last_fire_ms - due_ms)
        if len(self.lateness_ms) >= self.k:
            self.all_fired.set()


class Timed:
    """Wraps a store method to count calls and the time spent in them."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn, self.calls, self.seconds = fn, 0, 0.0

    async def __call__(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.fn(*args)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - started


def alert(i: int) -> Alert:
    labels = {"alertname": "BenchTimer", "instance": f"host-{i}", "severity": "page"}
    return Alert(
        f"{i:016x}", AlertStatus.FIRING, labels, starts_at_ms=1_700_000_000_000, group_key=f"bench-{i}"
    )


async def open_incidents(store: RedisStore, policies: PolicySet, dues: list[int], concurrency: int) -> None:
    metrics = Metrics(CollectorRegistry())
    queue = list(enumerate(dues))
    random.shuffle(queue)  # shards and due order independent of opening order

    async def worker() -> None:
        while queue:
            i, due = queue.pop()
            p = Processor(store, lambda: policies, FixedClock(due - HOUR_MS), metrics)
            result = await p.ingest([alert(i)])
            assert result.opened == 1, result

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def used_memory(store: RedisStore) -> int:
    info = await store.client.info("memory")
    return int(info["used_memory"])


async def memory_breakdown(store: RedisStore, sample: int = 200) -> dict[str, float]:
    """Mean MEMORY USAGE of an incident's own keys, and the per-shard structures' total (divided later)."""
    c = store.client
    ids: list[str] = []
    for shard in range(keys.SHARDS):
        members: list[bytes] = await c.zrange(keys.index(shard), 0, sample // keys.SHARDS)  # type: ignore[assignment]
        ids += [m.decode() for m in members]
    own = {"incident hash": 0, "timeline list": 0, "key pointer": 0}
    for incident_id in ids:
        raw: bytes = await c.hget(keys.incident(incident_id), "d")  # type: ignore[assignment]
        key = json.loads(raw)["key"]
        own["incident hash"] += await c.memory_usage(keys.incident(incident_id)) or 0
        own["timeline list"] += await c.memory_usage(keys.timeline(incident_id)) or 0
        own["key pointer"] += await c.memory_usage(keys.pointer(key)) or 0
    out = {k: v / len(ids) for k, v in own.items()}
    total = await c.dbsize()
    outbox: list[Callable[[int], str]] = [
        functools.partial(keys.stream, keys.DISPATCH, urgent=u) for u in keys.LANES
    ]
    shared: dict[str, list[Callable[[int], str]]] = {
        "timers zset": [keys.timers],
        "index zset": [keys.index],
        "outbox stream": outbox,
    }
    for name, fns in shared.items():
        out[name + " (per incident)"] = sum(
            [await c.memory_usage(fn(s)) or 0 for fn in fns for s in range(keys.SHARDS)]
        )
    out["keys"] = total
    return out


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU time of a process, from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profiler(out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on this very process, for the firing phase."""
    cmd = ["py-spy", "record", "--pid", str(os.getpid()), "--duration", str(round(seconds)), "--rate", "200"]
    cmd += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# (substring of a sampled stack, where the scheduler's time went): the first that matches wins
PHASES = (
    ("pump_retries", "cycle: pump_retries (one EVALSHA per shard, in sequence)"),
    ("next_due_ms", "cycle: next_due_ms (pipeline, 3 ZRANGE per shard)"),
    ("due_incidents", "cycle: due_incidents (one script per shard: due timers with their records)"),
    ("Processor.", "fire: decide + commit (a batch; stale ones loaded one by one)"),
)


def profile_breakdown(raw: Path) -> dict[str, float]:
    """Share of the scheduler's samples per phase (fires run as gather() tasks: match any Scheduler frame)."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "Scheduler." not in stack:
            continue
        phase = next((name for key, name in PHASES if key in stack), "other")
        counts[phase] = counts.get(phase, 0) + int(n)
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def git_state() -> str:
    """HEAD and whether engine/ has uncommitted changes (others may be editing while we measure)."""
    root = BENCH.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "engine"], cwd=root, capture_output=True, text=True
    )
    return head.stdout.strip() + (" + uncommitted engine/ changes" if dirty.stdout.strip() else "")


def pct(sorted_ms: list[int], p: float) -> float:
    return float(sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop redis, remove tmp
    configure_logging("warning")
    policies = load_policies(BENCH / "policies" / "timers")
    k = args.incidents
    with tempfile.TemporaryDirectory(prefix="bench-timers-") as tmp:
        async with EmbeddedRedis(Path(tmp) / "data", fsync=args.fsync) as server:
            store = RedisStore(await connect(server.url))
            try:
                base = time.time_ns() // 1_000_000 + 86_400_000  # any instant: the scheduler clock is shifted
                spread_ms = int(args.spread * 1000)
                dues = [base + i * spread_ms // k for i in range(k)]
                mem0 = await used_memory(store)
                started = time.monotonic()
                await open_incidents(store, policies, dues, args.concurrency)
                open_s = time.monotonic() - started
                mem1 = await used_memory(store)
                breakdown = await memory_breakdown(store)
                n_timers = sum([await store.client.zcard(keys.timers(s)) for s in range(keys.SHARDS)])
                assert n_timers == k, n_timers
                for name in list(breakdown):
                    if name.endswith("(per incident)"):
                        breakdown[name] /= k
                print(f"opened {k} incidents in {open_s:.1f} s ({k / open_s:.0f}/s); "
                      f"used_memory +{(mem1 - mem0) / k:.0f} B per incident", flush=True)  # fmt: skip

                clock = ShiftedClock(base - int(args.lead * 1000) - time.time_ns() // 1_000_000)
                metrics = Metrics(CollectorRegistry())
                processor = TimedProcessor(store, lambda: policies, clock, metrics)
                processor.expect(k)
                due_timers, next_due = Timed(store.due_incidents), Timed(store.next_due_ms)
                store.due_incidents = due_timers  # type: ignore[method-assign, assignment]
                store.next_due_ms = next_due  # type: ignore[method-assign]
                scheduler = Scheduler(store, processor, clock, metrics)
                gctune.tune()  # as `engine worker` does once started
                cpu0 = cpu_seconds(server.pid), time.process_time(), time.monotonic()
                tail_s = 5  # the profile covers the late tail as well
                spy = start_profiler(args.profile, args.lead + args.spread + tail_s) if args.profile else None
                task = asyncio.create_task(scheduler.run())
                with contextlib.suppress(TimeoutError):  # bounded: report what fired by then
                    async with asyncio.timeout(args.lead + args.spread + args.max_wait):
                        await processor.all_fired.wait()
                last_fire = processor.last_fire_ms
                wall = time.monotonic() - cpu0[2]
                cpu = {
                    "scheduler process": round((time.process_time() - cpu0[1]) / wall, 2),
                    "redis-server": round((cpu_seconds(server.pid) - cpu0[0]) / wall, 2),
                }
                scheduler.stop()
                await asyncio.wait_for(task, 30)
                if spy is not None:
                    await asyncio.to_thread(spy.wait, 60)
                fired = sorted(processor.lateness_ms)
                if not fired:
                    raise RuntimeError("no timer fired")
                hist = {s.name: s.value for m in metrics.registry.collect() for s in m.samples
                        if s.name.startswith("escalation_timer_lateness_seconds_")}  # fmt: skip
            finally:
                await store.close()
    return {
        "date": datetime.date.today().isoformat(),
        "engine": git_state(),
        "incidents": k,
        "spread_s": args.spread,
        "fsync": args.fsync,
        "open_s": round(open_s, 1),
        "open_per_s": round(k / open_s),
        "used_memory_per_incident_B": round((mem1 - mem0) / k),
        "memory_breakdown_B": {name: round(v) for name, v in breakdown.items()},
        "fired": len(fired),
        "lateness_ms": {
            "p50": pct(fired, 50),
            "p90": pct(fired, 90),
            "p99": pct(fired, 99),
            "max": float(fired[-1]),
            "mean": round(statistics.fmean(fired), 1),
        },
        "last_fire_after_last_due_s": round((last_fire - (base + spread_ms)) / 1000, 2),
        "fire_wall_ms_mean": round(
            1000 * processor.fire_seconds / len(fired), 2
        ),  # one fire(), overlapping others
        "cpu_cores_while_firing": cpu,
        "scheduler_reads": {
            "due_timers_calls": due_timers.calls,
            "due_timers_ms_mean": round(1000 * due_timers.seconds / max(1, due_timers.calls), 2),
            "next_due_calls": next_due.calls,
            "next_due_ms_mean": round(1000 * next_due.seconds / max(1, next_due.calls), 2),
        },
        "histogram_count": hist.get("escalation_timer_lateness_seconds_count"),
        "profile_pct": profile_breakdown(args.profile) if args.profile else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=20, help="seconds across which the timers fall due")
    parser.add_argument("--lead", type=float, default=3, help="seconds from scheduler start to the first due")
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent ingests while opening")
    parser.add_argument("--max-wait", type=float, default=300, help="give up this long after the last due")
    parser.add_argument("--profile", type=Path, help="py-spy the firing phase into this raw file")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: redis-server stopped, temporary data removed", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    name = f"timers-{result['date']}-{args.incidents}-{args.spread:g}s-{args.fsync}"
    out = BENCH / "results" / (name + ("-profiled" if args.profile else "") + ".json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
