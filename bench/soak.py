"""Engine memory over a soak: `engine serve` under a steady mixed load, RSS sampled throughout.

    python -m bench.soak [--minutes 10] [--rate 50] [--retention-s 60] [--out FILE]

Starts `python -m engine serve` (embedded Redis, fsync=always, log level warning) on
`bench/policies/ingest` (no page leaves the machine: PagerDuty has no routing key), with resolved
incidents kept only --retention-s seconds (ESCALATION_RETENTION_DAYS), so that Redis too should
level off once the first of them expire. Then sends webhooks open loop at --rate per second, each
a 3-alert group (the fixture, 3 incidents per group):
  20 %  a new group (firing); half of them get their critical incident acknowledged through the
        API (POST /api/v1/incidents/{id}/ack) right after the answer
  20 %  an open group resolved (every alert resolved: its incidents close)
  60 %  a repeat of an open group, byte for byte (duplicates)
Every few seconds it samples the engine's RSS, redis-server's RSS and INFO used_memory. After a
warm-up (30 s, or a quarter of a short run) it reports start / end / max RSS, the growth, and the
growth per hour by a least-squares slope over the samples. Bounded: rate * minutes webhooks, at
most 512 in flight, then the answers are waited for (30 s each at most) and everything is stopped.
"""

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.e2e import pct, rss_mb
from bench.incident_size import run_async
from bench.ingest import WEBHOOK, Server, Target, counters, cpu_seconds, free_port
from bench.repeats import group
from bench.standalone import Flat, Progress, run_alone

BENCH = Path(__file__).resolve().parent
MINUTES = {"default": 2.0, "quick": 0.5, "smoke": 0.1}  # `python -m bench`; standalone: --minutes
MAX_OPEN_GROUPS = 300  # beyond this, a new group turns into a resolve: the open set stays bounded
MAX_IN_FLIGHT = 512
ACK_SHARE = 0.5
HEADERS = {"Content-Type": "application/json"}


def resolved(i: int) -> dict[str, Any]:
    body = group(i)
    ends = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    body["status"] = "resolved"
    for a in body["alerts"]:  # type: ignore[attr-defined]
        a["status"], a["endsAt"] = "resolved", ends
    return body


class Load:
    """The open-loop sender, the groups it keeps open, and what came back."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.rng = random.Random(20261211)
        self.open: list[int] = []
        self.next_group = 0
        self.answers: dict[str, int] = {}
        self.acks: dict[str, int] = {}
        self.response_ms: list[float] = []
        self.skipped = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def pick(self) -> tuple[str, int, bytes]:
        r = self.rng.random()
        if self.open and (r < 0.2 or (r < 0.4 and len(self.open) >= MAX_OPEN_GROUPS)):
            i = self.open.pop(self.rng.randrange(len(self.open)))
            return "resolve", i, json.dumps(resolved(i)).encode()
        if r < 0.4 or not self.open:
            self.next_group += 1
            return "new", self.next_group, json.dumps(group(self.next_group)).encode()
        i = self.open[self.rng.randrange(len(self.open))]
        return "repeat", i, json.dumps(group(i)).encode()

    async def post(self, kind: str, i: int, body: bytes) -> None:
        started = time.monotonic()
        try:
            async with self.session.post(self.base + WEBHOOK, data=body, headers=HEADERS) as resp:
                reply = await resp.json() if resp.status == 200 else {}
                answer = str(resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            reply, answer = {}, type(e).__name__
        self.response_ms.append(1000 * (time.monotonic() - started))
        self.answers[answer] = self.answers.get(answer, 0) + 1
        if kind != "new" or answer != "200":
            return
        self.open.append(i)  # committed: repeats and resolves may pick it now
        if reply.get("incidents") and self.rng.random() < ACK_SHARE:
            await self.ack(str(reply["incidents"][0]))  # the group's critical incident comes first

    async def ack(self, incident_id: str) -> None:
        try:
            url = f"{self.base}/api/v1/incidents/{incident_id}/ack"
            async with self.session.post(url, json={"by": "soak", "note": "bench"}) as resp:
                answer = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            answer = type(e).__name__
        self.acks[answer] = self.acks.get(answer, 0) + 1

    async def run(self, rate: float, seconds: float) -> None:
        t0 = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self.tasks) >= MAX_IN_FLIGHT:  # the engine stalls: do not pile up without bound
                self.skipped += 1
                continue
            task = asyncio.create_task(self.post(*self.pick()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if self.tasks:
            await asyncio.gather(*self.tasks)


class Sampler:
    """(seconds since start, engine RSS MB, redis-server RSS MB, used_memory MB), every period. The
    engine's RSS is its HTTP process's plus its worker process's."""

    def __init__(
        self, pids: list[int | None], redis_pid: int | None, redis: Redis | None, progress: Progress
    ) -> None:
        self.pids, self.redis_pid, self.redis, self.progress = pids, redis_pid, redis, progress
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, float, float, float]] = []

    async def sample(self) -> None:
        used = 0.0
        if self.redis is not None:
            used = int((await self.redis.info("memory"))["used_memory"]) / 2**20
        each, redis = [rss_mb(pid) for pid in self.pids], rss_mb(self.redis_pid)
        if None in each:
            return
        engine = round(sum(v for v in each if v is not None), 1)
        t = time.monotonic() - self.t0
        if self.samples and int(t // 60) > int(self.samples[-1][0] // 60):  # a line a minute
            self.progress(
                f"soak: {t:.0f} s, engine RSS {engine} MB, redis RSS {redis} MB, used_memory {used:.1f} MB"
            )
        self.samples.append((t, engine, redis or 0.0, round(used, 2)))

    async def every(self, period_s: float) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(period_s)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3 or len({t for t, _ in points}) < 2:
        return 0.0
    fit = statistics.linear_regression([t for t, _ in points], [v for _, v in points])
    return round(fit.slope * 3600, 1)


async def soak(minutes: float, rate: float, retention_s: float, progress: Progress) -> Flat:
    seconds = minutes * 60
    warmup_s = min(30.0, seconds / 4)
    period_s = 5.0 if seconds >= 120 else max(1.0, seconds / 15)
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    env = {"ESCALATION_RETENTION_DAYS": repr(retention_s / 86_400)}
    server = Server(
        Target("engine soak", "engine", "always"), free_port(), workdir, BENCH / "policies" / "ingest", env
    )
    redis: Redis | None = None
    try:
        await asyncio.to_thread(server.start)
        pid = server.proc.pid if server.proc else None
        if (server.data_dir / "redis.sock").exists():  # the embedded server's own socket
            redis = Redis(unix_socket_path=str(server.data_dir / "redis.sock"))
        pids = [pid, server.worker_pid]
        sampler = Sampler(pids, server.redis_pid, redis, progress)
        progress(
            f"soak: {rate:g} webhooks/s for {minutes:g} min "
            f"(warm-up {warmup_s:.0f} s, sample every {period_s:.0f} s)"
        )
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), timeout=timeout
        ) as session:
            load = Load(session, server.base)
            sampling = asyncio.create_task(sampler.every(period_s))
            cpu0: tuple[float, float] | None = None

            async def after_warmup() -> None:
                nonlocal cpu0
                await asyncio.sleep(warmup_s)
                cpu0 = sum(map(cpu_seconds, pids)), time.monotonic()

            marker = asyncio.create_task(after_warmup())
            try:
                await load.run(rate, seconds)
            finally:
                sampling.cancel()
                marker.cancel()
            await sampler.sample()
        engine_cores = (sum(map(cpu_seconds, pids)) - cpu0[0]) / (time.monotonic() - cpu0[1]) if cpu0 else 0.0
        totals = await asyncio.to_thread(counters, server.base)
        peak = sum(rss_mb(p, "VmHWM") or 0.0 for p in pids)
    finally:
        if redis is not None:
            await redis.aclose()
        await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)

    after = [s for s in sampler.samples if s[0] >= warmup_s] or sampler.samples[-1:]
    first, last = after[0], after[-1]
    sent = sum(load.answers.values())
    response = sorted(load.response_ms)
    flat: Flat = {
        "soak.minutes": round(minutes, 2),
        "soak.rate": rate,
        "soak.warmup_s": round(warmup_s, 1),
        "soak.retention_s": retention_s,
        "soak.samples": len(after),
        "soak.webhooks": sent,
        "soak.non_2xx": sent - load.answers.get("200", 0),
        "soak.skipped_engine_stalled": load.skipped,
        "soak.acks": sum(load.acks.values()),
        "soak.acks_non_2xx": sum(load.acks.values()) - load.acks.get("200", 0),
        "soak.incidents_opened": int(totals.get("escalation_incidents_opened_total", 0)),
        "soak.open_groups_at_end": len(load.open),
        "soak.webhook_p50_ms": round(pct(response, 50), 1) if response else 0.0,
        "soak.webhook_p99_ms": round(pct(response, 99), 1) if response else 0.0,
        "soak.engine_cpu_cores": round(engine_cores, 2),
        "soak.rss_start_mb": first[1],
        "soak.rss_end_mb": last[1],
        "soak.rss_max_mb": max(s[1] for s in after),
        "soak.rss_peak_mb": peak or 0.0,
        "soak.rss_growth_mb": round(last[1] - first[1], 1),
        "soak.rss_slope_mb_per_hour": slope_per_hour([(s[0], s[1]) for s in after]),
        # the first minutes still carry the warm-up's ramp: a leak shows in the second half too
        "soak.rss_slope_second_half_mb_per_hour": slope_per_hour(
            [(s[0], s[1]) for s in after[len(after) // 2 :]]
        ),
        "soak.redis_rss_start_mb": first[2],
        "soak.redis_rss_end_mb": last[2],
        "soak.redis_used_memory_start_mb": first[3],
        "soak.redis_used_memory_end_mb": last[3],
        "soak.redis_used_memory_growth_mb": round(last[3] - first[3], 1),
        "soak.redis_used_memory_slope_mb_per_hour": slope_per_hour([(s[0], s[3]) for s in after]),
    }
    progress(
        f"soak: {sent:,} webhooks ({flat['soak.non_2xx']} non-2xx), {flat['soak.acks']} acks; engine RSS "
        f"{first[1]} -> {last[1]} MB (max {flat['soak.rss_max_mb']}, "
        f"{flat['soak.rss_slope_mb_per_hour']} MB/h); "
        f"redis used_memory {first[3]} -> {last[3]} MB"
    )
    return flat


def run_part(mode: str, progress: Progress) -> Flat:
    """For `python -m bench`: 2 minutes of load by default, 30 s quick, 6 s smoke (+ ~2 s start and stop)."""
    minutes = MINUTES[mode]  # resolved incidents kept a quarter of the run: Redis levels off within it
    return run_async(lambda: soak(minutes, 50, min(60.0, minutes * 15), progress))


def markdown(flat: Flat) -> list[str]:
    if "soak.minutes" not in flat:
        return []
    f = flat
    head = ["minutes", "webhooks", "non-2xx", "acks", "engine RSS start MB", "end MB", "max MB", "growth MB",
            "slope MB/h", "redis used_memory start MB", "end MB", "slope MB/h", "webhook p99 ms"]  # fmt: skip
    keys = ["minutes", "webhooks", "non_2xx", "acks", "rss_start_mb", "rss_end_mb", "rss_max_mb",
            "rss_growth_mb", "rss_slope_mb_per_hour", "redis_used_memory_start_mb",
            "redis_used_memory_end_mb", "redis_used_memory_slope_mb_per_hour", "webhook_p99_ms"]  # fmt: skip
    values = [f.get("soak." + k) for k in keys]
    row = ["—" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in values]
    return [
        "## Soak: engine memory under a steady load",
        "",
        f"`bench/soak.py`: `engine serve` (embedded Redis, fsync=always, `bench/policies/ingest`, resolved "
        f"incidents kept {f.get('soak.retention_s')} s) under {f.get('soak.rate')} webhooks/s open loop: "
        "20 % new 3-alert groups (half of them acknowledged through the API), 20 % groups resolved, "
        "60 % repeats. RSS from /proc, redis used_memory from INFO, sampled every few seconds; start = "
        f"the first sample after a {f.get('soak.warmup_s')} s warm-up; slope = least squares over the "
        "samples after it.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] * len(head)) + "|",
        "| " + " | ".join(row) + " |",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="webhooks per second")
    parser.add_argument("--retention-s", type=float, default=60, help="how long resolved incidents are kept")
    parser.add_argument("--out", type=Path, help="also write the JSON there")
    args = parser.parse_args()
    return run_alone(
        "soak",
        lambda progress: run_async(lambda: soak(args.minutes, args.rate, args.retention_s, progress)),
        markdown,
        args.out,
        "engine and redis-server stopped",
    )


if __name__ == "__main__":
    raise SystemExit(main())
