"""Webhook cost against incident size: 3 alerts changed in one incident of N alerts must cost O(3).

    python -m bench.incident_size [--mode default|quick|smoke] [--sizes 10 100 1000 10000] [--out FILE]

For each N, a fresh embedded redis-server (AOF, fsync=always, unix socket) and one incident: N
alerts of one Alertmanager group (`bench/policies/incident_size` groups by group key), fed in
webhooks of 500 alerts through `Processor.ingest`. Then, timed, webhooks of 3 alerts of that
incident that each change state, so that every one is a real commit: the 3 alerts are resolved,
and the next time they come round fired again with a newer startsAt. The last alert is never
touched, so the incident stays open. Three phases, each bounded by a count and a time budget:

  sequential   one webhook at a time: wall ms per webhook (p50, p99), the engine's CPU per webhook
               (this process, getrusage), redis-server's CPU per webhook (/proc) and INFO
               commandstats (usec per script call, all commands' usec per webhook)
  concurrent   8 webhooks in flight, each on its own alerts (fewer when N / 3 < 8): they still
               race for the one incident's version, so conflicts and re-reads are part of the cost
  duplicate    3 alerts sent again unchanged: no commit, a counter bump

Plus what Redis holds for the incident right after it was built (MEMORY USAGE, SAMPLES 0, of
every key named after the incident, and its key pointer). Only the engine's public API is used
(Processor, RedisStore, EmbeddedRedis, keys), so it runs before and after the store's layout
changes. Prints a Markdown table and the flat JSON (keys `incident_size.n<N>.<figure>`).
"""

import argparse
import asyncio
import itertools
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from bench.e2e import pct
from bench.page_cost import page_cost
from bench.repeats import Clock, cpu_s
from bench.standalone import Flat, Progress, add_ratios, cell, run_alone
from bench.timers import cpu_seconds, git_state
from engine.errors import StoreError
from engine.ingest.alertmanager import parse_payload
from engine.logs import configure_logging
from engine.metrics import Metrics
from engine.policy.loader import load_policies
from engine.processor import Processor
from engine.store import keys
from engine.store.connect import connect
from engine.store.embedded import EmbeddedRedis
from engine.store.redis import RedisStore
from engine.times import rfc3339

BENCH = Path(__file__).resolve().parent
POLICIES = BENCH / "policies" / "incident_size"
GROUP_KEY = '{}:{alertname="BenchSize"}'
K = 3  # alerts per timed webhook
BUILD_BATCH = 500  # alerts per webhook while building the incident
CONCURRENCY = 8
NOT_ENDED = "0001-01-01T00:00:00Z"

T = TypeVar("T")


@dataclass(frozen=True)
class Mode:
    sizes: tuple[int, ...]
    phase_s: float  # a timed phase stops after this long...
    max_webhooks: int  # ...or this many webhooks,
    min_webhooks: int  # but not before this many (the concurrent phase: one per worker)
    concurrent_up_to: int  # the concurrent phase only up to this N (at 10,000 before issue 11: ~2 s CPU each)


MODES = {
    "default": Mode((10, 100, 1_000, 10_000), 5.0, 300, 12, 10_000),
    "quick": Mode((10, 100, 1_000, 10_000), 1.2, 100, 5, 1_000),
    "smoke": Mode((10, 100), 0.4, 20, 3, 100),
}


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run(main()) with SIGTERM cancelling it, so every server stops through the finally
    blocks; the SIGTERM handler before it is put back after (asyncio leaves SIG_DFL behind)."""
    handler = signal.getsignal(signal.SIGTERM)

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


class Group:
    """The N alerts of one Alertmanager group, and what the engine was last told about each."""

    def __init__(self, n: int, t0_ms: int) -> None:
        self.n = n
        self.starts = [t0_ms] * n
        self.ends: list[int | None] = [None] * n
        self.tick = t0_ms
        self.triples = max(1, (n - 1) // K)  # alert n-1 is never touched: the incident stays open

    def alert(self, i: int) -> dict[str, Any]:
        ended = self.ends[i]
        labels = {"alertname": "BenchSize", "instance": f"host-{i:05d}.example.net:9100", "job": "node",
                  "service": "checkout", "severity": "page"}  # fmt: skip
        return {
            "status": "firing" if ended is None else "resolved",
            "labels": labels,
            "annotations": {"summary": f"host-{i:05d} is down", "runbook_url": "https://runbooks/node-down"},
            "startsAt": rfc3339(self.starts[i]),
            "endsAt": NOT_ENDED if ended is None else rfc3339(ended),
            "generatorURL": "http://prometheus.example.net:9090/graph?g0.expr=up+%3D%3D+0",
            "fingerprint": f"{i:016x}",
        }

    def webhook(self, idx: range | list[int]) -> dict[str, Any]:
        return {"version": "4", "groupKey": GROUP_KEY, "status": "firing", "receiver": "bench",
                "groupLabels": {"alertname": "BenchSize"}, "externalURL": "http://127.0.0.1:9093",
                "alerts": [self.alert(i) for i in idx]}  # fmt: skip

    def flip(self, t: int) -> list[int]:
        """Change triple t: resolve its alerts if firing, else fire them again with a newer startsAt."""
        self.tick += 1
        idx = [K * (t % self.triples) + j for j in range(K)]
        for i in idx:
            if self.ends[i] is None:
                self.ends[i] = self.tick
            else:
                self.starts[i], self.ends[i] = self.tick, None
        return idx

    def same(self, t: int) -> list[int]:
        return [K * (t % self.triples) + j for j in range(K)]


@dataclass
class Phase:
    wall_ms: list[float]
    cpu_s: float
    redis_cpu_s: float
    elapsed_s: float
    conflicts: float
    script_usec_per_call: float
    redis_usec_total: float
    errors: int
    unexpected: int  # a change counted as duplicate, or a duplicate that was not

    def figures(self, ms: str, pre: str) -> dict[str, float | int]:
        """`<ms>_ms_p50` and the like for the latencies, `<pre>cpu_ms_per_webhook` for the rest."""
        n = len(self.wall_ms)
        wall = sorted(self.wall_ms)
        return {
            f"{pre}webhooks": n,
            f"{ms}_ms_p50": round(pct(wall, 50), 2),
            f"{ms}_ms_p99": round(pct(wall, 99), 2),
            f"{pre}cpu_ms_per_webhook": round(1000 * self.cpu_s / n, 3),
            f"{pre}redis_cpu_ms_per_webhook": round(1000 * self.redis_cpu_s / n, 3),
            f"{pre}redis_usec_per_webhook": round(self.redis_usec_total / n, 1),
            f"{pre}script_usec_per_call": round(self.script_usec_per_call, 1),
            f"{pre}webhooks_per_s": round(n / self.elapsed_s, 1),
            f"{pre}conflicts_per_webhook": round(self.conflicts / n, 3),
            f"{pre}errors": self.errors,
            f"{pre}unexpected": self.unexpected,
        }


async def commandstats(store: RedisStore) -> tuple[float, float]:
    """(usec per script call, usec of every command) since the last CONFIG RESETSTAT."""
    stats: dict[str, Any] = await store.client.info("commandstats")
    scripts = [
        v for k, v in stats.items() if k.split("|")[0] in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")
    ]
    calls = sum(int(v["calls"]) for v in scripts)
    usec = sum(float(v["usec"]) for v in scripts)
    return (usec / calls if calls else 0.0), sum(float(v["usec"]) for v in stats.values())


def conflicts(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("escalation_commit_conflicts_total") or 0.0


async def timed(
    proc: Processor, server: EmbeddedRedis, store: RedisStore, mode: Mode,
    make: Callable[[int, int], dict[str, Any]], workers: int, duplicates: bool, least: int,
) -> Phase:  # fmt: skip
    """Webhooks from make(worker, i), `workers` in flight, until the mode's count or time is used."""
    wall: list[float] = []
    sent = errors = unexpected = 0
    await store.client.config_resetstat()
    conflicts0, redis0, cpu0, t0 = (
        conflicts(proc.metrics),
        cpu_seconds(server.pid),
        cpu_s(),
        time.perf_counter(),
    )

    def more() -> bool:  # counted when sent: a slow phase stops starting webhooks at its budget
        return sent < least or (sent < mode.max_webhooks and time.perf_counter() - t0 < mode.phase_s)

    async def worker(w: int) -> None:
        nonlocal sent, errors, unexpected
        refused: dict[str, Any] | None = None
        for i in itertools.count():
            if not more():
                return
            sent += 1
            body, refused = refused or make(w, i), None
            started = time.perf_counter()
            try:
                result = await proc.ingest(parse_payload(body)[1])
            except StoreError:  # too many conflicting writers (a 503): sent again, as Alertmanager would
                errors, refused = errors + 1, body
                continue
            wall.append(1000 * (time.perf_counter() - started))
            unexpected += int((result.duplicates == K) != duplicates)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed, cpu, redis_cpu = time.perf_counter() - t0, cpu_s() - cpu0, cpu_seconds(server.pid) - redis0
    script_usec, usec_total = await commandstats(store)
    if not wall:
        raise RuntimeError("every webhook of the phase failed")
    return Phase(wall, cpu, redis_cpu, elapsed, conflicts(proc.metrics) - conflicts0, script_usec, usec_total,
                 errors, unexpected)  # fmt: skip


async def incident_bytes(store: RedisStore, incident_id: str) -> dict[str, int]:
    """MEMORY USAGE (exact: SAMPLES 0) of every key named after the incident, and its key pointer."""
    c = store.client
    inc = await store.load(incident_id)
    assert inc is not None
    record = timeline = 0
    async for raw in c.scan_iter(match=f"*{incident_id}*", count=1000):
        name = raw.decode()
        size = int(await c.memory_usage(name, samples=0) or 0)
        if name == keys.timeline(incident_id):
            timeline += size
        else:
            record += size
    pointer = int(await c.memory_usage(keys.pointer(inc.key), samples=0) or 0)
    return {"record_bytes": record, "timeline_bytes": timeline, "incident_bytes": record + timeline + pointer}


async def measure_size(n: int, mode: Mode, progress: Progress) -> dict[str, float | int]:
    policies = load_policies(POLICIES)
    group = Group(n, time.time_ns() // 1_000_000 - 3_600_000)
    with tempfile.TemporaryDirectory(prefix="bench-incident-size-") as tmp:
        async with EmbeddedRedis(Path(tmp) / "data", fsync="always") as server:
            store = RedisStore(await connect(server.url))
            try:
                proc = Processor(store, lambda: policies, Clock(), Metrics(CollectorRegistry()))
                mem0 = int((await store.client.info("memory"))["used_memory"])
                started, ids = time.perf_counter(), set()
                for lo in range(0, n, BUILD_BATCH):
                    result = await proc.ingest(
                        parse_payload(group.webhook(range(lo, min(n, lo + BUILD_BATCH))))[1]
                    )
                    ids.update(result.incidents)
                build_s = time.perf_counter() - started
                mem1 = int((await store.client.info("memory"))["used_memory"])
                if len(ids) != 1:
                    raise RuntimeError(f"the policy split one group into {len(ids)} incidents")
                incident_id = ids.pop()
                out: dict[str, float | int] = {"alerts": n, "build_s": round(build_s, 2)}
                out["used_memory_bytes_per_alert"] = round((mem1 - mem0) / n)
                out |= await incident_bytes(store, incident_id)
                for t in range(2):  # warm-up: first calls load scripts and fill caches
                    await proc.ingest(parse_payload(group.webhook(group.flip(t)))[1])

                count = itertools.count()  # one sequence: each webhook flips the next triple

                def sequential(w: int, i: int) -> dict[str, Any]:
                    return group.webhook(group.flip(next(count)))

                least = mode.min_webhooks
                out |= (await timed(proc, server, store, mode, sequential, 1, False, least)).figures(
                    "webhook", ""
                )
                c = min(CONCURRENCY, group.triples)
                per_worker = group.triples // c

                def disjoint(w: int, i: int) -> dict[str, Any]:  # worker w only ever touches its own triples
                    return group.webhook(group.flip(w + c * (i % per_worker)))

                if n <= mode.concurrent_up_to:
                    conc = await timed(proc, server, store, mode, disjoint, c, False, c)
                    out |= conc.figures("concurrent", "concurrent_") | {"concurrency": c}

                def duplicate(w: int, i: int) -> dict[str, Any]:
                    return group.webhook(group.same(i))

                out |= (await timed(proc, server, store, mode, duplicate, 1, True, least)).figures(
                    "duplicate", "duplicate_"
                )
                out |= await page_cost(store, incident_id, policies)
                inc = await store.load(incident_id)
                if inc is None or len(inc.alerts) != n or not inc.is_open:
                    raise RuntimeError(
                        f"incident {incident_id} lost alerts or closed: {inc and len(inc.alerts)}"
                    )
            finally:
                await store.close()
    progress(
        f"incident_size N={n:,}: built in {build_s:.1f} s; webhook p50 {out['webhook_ms_p50']} ms, "
        f"CPU {out['cpu_ms_per_webhook']} ms; {c} concurrent p50 {out.get('concurrent_ms_p50', '-')} ms; "
        f"duplicate p50 {out['duplicate_ms_p50']} ms; incident record {out['record_bytes']:,} B; "
        f"a page {out['page_cpu_ms']} CPU ms ({out['page_whole_read_cpu_ms']} reading every alert)"
    )
    return out


async def run(mode: Mode, progress: Progress) -> Flat:
    configure_logging("warning", "json")
    flat: Flat = {
        "incident_size.sizes": ",".join(map(str, mode.sizes)),
        "incident_size.alerts_per_webhook": K,
        "incident_size.engine": git_state(),
    }
    for n in mode.sizes:
        figures = await measure_size(n, mode, progress)
        for name, value in figures.items():
            flat[f"incident_size.n{n}.{name}"] = value
    lo, hi = min(mode.sizes), max(mode.sizes)
    names = ("cpu_ms_per_webhook", "webhook_ms_p50", "duplicate_cpu_ms_per_webhook", "page_cpu_ms")
    add_ratios(flat, lambda n, name: f"incident_size.n{n}.{name}", lo, hi, names,
               lambda name: f"incident_size.ratio_n{hi}_to_n{lo}.{name}")  # fmt: skip
    return flat


def run_part(mode: str, progress: Progress) -> Flat:
    """For `python -m bench`: default ≤ 90 s, quick ≤ 25 s, smoke (N = 10, 100) ≤ 8 s."""
    return run_async(lambda: run(MODES[mode], progress))


def markdown(flat: Flat) -> list[str]:
    sizes = [int(s) for s in str(flat.get("incident_size.sizes", "")).split(",") if s]
    if not sizes:
        return []

    def g(n: int, name: str) -> str:
        return cell(flat.get(f"incident_size.n{n}.{name}"))

    head = ["alerts in the incident", "webhook p50 ms", "p99 ms", "engine CPU ms / webhook",
            "redis CPU ms / webhook", "script µs / call", "concurrent: p50 ms", "p99 ms",
            "CPU ms / webhook", "conflicts / webhook", "refused", "duplicate: p50 ms", "CPU ms / webhook",
            "Redis bytes: record", "timeline", "a page: CPU ms", "every alert read: CPU ms"]  # fmt: skip
    rows = [[f"{n:,}", g(n, "webhook_ms_p50"), g(n, "webhook_ms_p99"), f"**{g(n, 'cpu_ms_per_webhook')}**",
             g(n, "redis_cpu_ms_per_webhook"), g(n, "script_usec_per_call"),
             g(n, "concurrent_ms_p50"), g(n, "concurrent_ms_p99"), g(n, "concurrent_cpu_ms_per_webhook"),
             g(n, "concurrent_conflicts_per_webhook"), g(n, "concurrent_errors"), g(n, "duplicate_ms_p50"),
             g(n, "duplicate_cpu_ms_per_webhook"), g(n, "record_bytes"), g(n, "timeline_bytes"),
             f"**{g(n, 'page_cpu_ms')}**", g(n, "page_whole_read_cpu_ms")]
            for n in sizes]  # fmt: skip
    lo, hi = min(sizes), max(sizes)
    ratio = flat.get(f"incident_size.ratio_n{hi}_to_n{lo}.cpu_ms_per_webhook")
    return [
        "## Incident size: a 3-alert webhook against an incident of N alerts",
        "",
        "`bench/incident_size.py`: one incident per N (one Alertmanager group, `bench/policies/"
        "incident_size`), built in webhooks of 500 alerts, then webhooks of 3 of its alerts that each "
        "change state (resolved, then fired again with a newer startsAt: a real commit every time), "
        "through `Processor.ingest` against the embedded redis-server (fsync=always), one at a time; "
        f"then {CONCURRENCY} at a time on disjoint alerts (fewer when N is small; in one process they "
        "take turns on the one incident, so conflicts should stay 0; refused: gave up after the "
        "engine's 20 commit attempts, a 503, sent again); then 3 alerts repeated unchanged (duplicate). "
        "CPU: this process (getrusage) and redis-server (/proc) over each phase / webhooks; script µs: "
        "INFO commandstats. Bytes: MEMORY USAGE of the incident's keys and key pointer after building. "
        f"The cost should not depend on N: engine CPU per webhook at N = {hi:,} / N = {lo:,} = "
        f"**{ratio if ratio is not None else '—'}**. A page: what the delivery worker spends on one "
        "page about that incident (`bench/page_cost.py`: the read, the message, the e-mail), with "
        "the read it makes (the record and at most 50 alerts) and with every alert read. Page CPU at "
        f"N = {hi:,} / N = {lo:,} = "
        f"**{cell(flat.get(f'incident_size.ratio_n{hi}_to_n{lo}.page_cpu_ms'))}**.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] * len(head)) + "|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=list(MODES), default="default")
    parser.add_argument("--sizes", type=int, nargs="+", help="alerts per incident (default: the mode's)")
    parser.add_argument("--out", type=Path, help="also write the JSON there")
    args = parser.parse_args()
    mode = MODES[args.mode]
    if args.sizes:
        mode = Mode(tuple(args.sizes), mode.phase_s, mode.max_webhooks, mode.min_webhooks, max(args.sizes))
    return run_alone("incident_size", lambda progress: run_async(lambda: run(mode, progress)), markdown,
                     args.out, "redis-server stopped, temporary data removed")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
