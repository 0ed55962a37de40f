"""Retention: Redis memory over a long synthetic history of incidents opened, escalated, paged and
resolved: does it plateau?

    python -m bench.retention                  # 100,000 incidents per run, 3 runs (~4 minutes here)
    python -m bench.retention --quick          # 20,000 per run
    python -m bench.retention --out /tmp/r     # RETENTION.md and retention.json there, not bench/

Everything goes through the engine's own code against the embedded redis-server (AOF,
fsync=everysec): Processor.ingest opens and resolves incidents, Scheduler.cycle fires their
ladders' timers, a stand-in delivery consumer takes every page off the outbox (ack + delete, as
delivery does) and keeps a chat thread reference per incident (Store.set_thread). The engine's
clock is virtual: each step is one minute of history with --per-minute new incidents, each
resolved --lifetime minutes after it opened (so level 2, due after 15 minutes, fires for every
one of them first). Redis expires on its own clock, so the retention is short in real time
(--retention-s): the history runs many retention periods long.

Three runs, each on an empty Redis: `expiry` (the engine with no retention task: what PEXPIRE
alone does), `retention` (engine.archive.Retention sweeping every second), and `archive` (the
same, writing every resolved incident to an archive directory before it expires). Each reports
Redis used_memory, keys and index entries as the history grows, and the growth over its second
half; the second and third must be flat.
"""

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import report  # noqa: E402
from engine.alerts import Alert, AlertStatus  # noqa: E402
from engine.archive import Retention  # noqa: E402
from engine.logs import configure_logging  # noqa: E402
from engine.metrics import Metrics  # noqa: E402
from engine.policy.loader import load_policies  # noqa: E402
from engine.processor import Processor  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402
from engine.store import keys  # noqa: E402
from engine.store.base import OutboxEntry  # noqa: E402
from engine.store.connect import connect  # noqa: E402
from engine.store.embedded import EmbeddedRedis  # noqa: E402
from engine.store.redis import RedisStore  # noqa: E402
from engine.store.sweep import Sweeper  # noqa: E402

MINUTE_MS = 60_000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00Z: the virtual history starts here
RUNS = ("expiry", "retention", "archive")


class VirtualClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


def alert(i: int, status: AlertStatus) -> Alert:
    labels = {"alertname": "BenchTimer", "instance": f"host-{i}", "severity": "page"}
    return Alert(f"{i:016x}", status, labels, starts_at_ms=T0_MS, group_key=f"bench-{i}")


async def deliver(store: RedisStore) -> int:
    """What delivery does to the decided outbox, without sending: read, ack and delete."""
    done = 0
    while True:
        entries = [e for e in await store.read_outbox("bench", 500) if isinstance(e, OutboxEntry)]
        if not entries:
            return done
        await asyncio.gather(*(store.ack(e) for e in entries))
        done += len(entries)


async def memory(store: RedisStore) -> dict[str, int]:
    info = await store.client.info("memory")
    index = sum([await store.client.zcard(keys.index(s)) for s in range(keys.SHARDS)])
    return {"used_memory": int(info["used_memory"]), "keys": int(await store.client.dbsize()), "index": index}


async def history(args: argparse.Namespace, run: str, data: Path, archive: Path) -> dict[str, Any]:
    policies = load_policies(BENCH / "policies" / "timers")
    retention_ms = int(args.retention_s * 1000)
    async with EmbeddedRedis(data, fsync="everysec") as server:
        store = RedisStore(await connect(server.url), retention_ms=retention_ms)
        try:
            clock = VirtualClock(T0_MS)
            metrics = Metrics(CollectorRegistry())
            proc = Processor(store, lambda: policies, clock, metrics)
            scheduler = Scheduler(store, proc, clock, metrics)
            await store.ensure_groups()
            sweeper = None if run == "expiry" else Sweeper(store.client, retention_ms)
            retention = Retention(
                sweeper,
                clock,
                archive_dir=archive if run == "archive" else None,
                interval_s=1.0,
                owner="bench",
            )
            task = asyncio.create_task(retention.run())
            empty = await memory(store)
            samples: list[dict[str, Any]] = []
            open_ids: dict[int, list[int]] = {}
            started = time.monotonic()
            steps = args.incidents // args.per_minute
            for step in range(steps + args.lifetime):
                if step < steps:
                    batch = range(step * args.per_minute, (step + 1) * args.per_minute)
                    results = await asyncio.gather(
                        *(proc.ingest([alert(i, AlertStatus.FIRING)]) for i in batch)
                    )
                    for r in results:
                        await store.set_thread(r.incidents[0], "slack", "#ops", "C1/1767225600.000100")
                    open_ids[step] = list(batch)
                if (old := open_ids.pop(step - args.lifetime, None)) is not None:
                    await asyncio.gather(*(proc.ingest([alert(i, AlertStatus.RESOLVED)]) for i in old))
                await scheduler.cycle()  # the ladders' level 2, due 15 virtual minutes in
                await deliver(store)
                clock.ms += MINUTE_MS
                done = min(step + 1, steps) * args.per_minute
                if done % args.sample_every == 0 and step < steps:
                    samples.append({"incidents": done, "seconds": round(time.monotonic() - started, 1)})
                    samples[-1] |= await memory(store)
            # the tail: everything resolved; wait out the retention (real time) and sweep once more
            await asyncio.sleep(args.retention_s + 2)
            if sweeper is not None:
                await retention.sweep()
            after = await memory(store)
            retention.stop()
            await task
        finally:
            await store.close()
    archived = await asyncio.to_thread(count_lines, archive) if run == "archive" else 0
    return summarise(run, args, empty, samples, after, archived, time.monotonic() - started)


def count_lines(directory: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in directory.glob("*.jsonl"))


def summarise(
    run: str,
    args: argparse.Namespace,
    empty: dict[str, int],
    samples: list[dict[str, Any]],
    after: dict[str, int],
    archived: int,
    seconds: float,
) -> dict[str, Any]:
    half = samples[len(samples) // 2]
    last = samples[-1]
    grown = last["used_memory"] - half["used_memory"]
    per_k = grown / ((last["incidents"] - half["incidents"]) / 1000)
    peak = max(s["used_memory"] for s in samples)
    return {
        "run": run,
        "incidents": last["incidents"],
        "seconds": round(seconds, 1),
        "incidents_per_s": round(last["incidents"] / seconds),
        "empty_used_memory": empty["used_memory"],
        "peak_used_memory": peak,
        "second_half_growth_bytes": grown,
        "second_half_growth_bytes_per_1k_incidents": round(per_k),
        "second_half_growth_pct_of_peak": round(100 * grown / peak, 1),
        "plateau": grown <= 0.05 * peak,  # shrinking is fine
        "after_used_memory": after["used_memory"],
        "after_keys": after["keys"],
        "after_index_entries": after["index"],
        "after_residue_bytes": after["used_memory"] - empty["used_memory"],
        "archived_lines": archived,
        "samples": samples,
    }


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def mib(n: float) -> str:
        return f"{n / 1048576:.1f}"

    out = [
        "# Retention: Redis memory over a long history",
        "",
        f"`python -m bench.retention {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        f"on {meta['meta.machine']}, {meta['meta.date']}, commit {meta['meta.commit']}; "
        f"redis-server {meta.get('meta.redis_server', '?')}.",
        "",
        f"Each run: {results[0]['incidents']:,} incidents, {meta['per_minute']} opened per virtual minute, "
        f"each resolved {meta['lifetime']} virtual minutes later (after its level-2 page at 15 minutes), "
        f"a thread reference kept per incident, every page taken off the outbox; retention "
        f"{meta['retention_s']} s of real time (Redis expires on its own clock), so the history spans "
        f"about {results[0]['seconds'] / meta['retention_s']:.0f} retention periods. See the docstring of "
        "`bench/retention.py`.",
        "",
        "| run | incidents/s | peak used_memory MiB | growth over 2nd half MiB | per 1k incidents B "
        "| plateau | after: keys | after: index entries | after: residue MiB | archived |",
        "|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r['run']} | {r['incidents_per_s']:,} | {mib(r['peak_used_memory'])} "
            f"| {mib(r['second_half_growth_bytes'])} | {r['second_half_growth_bytes_per_1k_incidents']:,} "
            f"| {'yes' if r['plateau'] else 'NO'} | {r['after_keys']:,} | {r['after_index_entries']:,} "
            f"| {mib(r['after_residue_bytes'])} | {r['archived_lines']:,} |"
        )
    out += ["", "used_memory (MiB) as the history grows:", ""]
    out.append("| incidents | " + " | ".join(r["run"] for r in results) + " |")
    out.append("|---:|" + "---:|" * len(results))
    for row in zip(*(r["samples"] for r in results), strict=True):
        out.append(f"| {row[0]['incidents']:,} | " + " | ".join(mib(s["used_memory"]) for s in row) + " |")
    out += [
        "",
        "`plateau`: used_memory grew by at most 5% of its peak over the second half of the history. "
        "`after`: once every incident resolved and the retention ran out (plus a last sweep): what is left "
        "beyond an empty engine. `expiry` keeps one index entry per incident forever (list_incidents "
        "drops gone entries only among the newest it reads): that is the leak the retention task removes.",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 incidents per run")
    parser.add_argument("--per-minute", type=int, default=20, help="incidents opened per virtual minute")
    parser.add_argument("--lifetime", type=int, default=20, help="virtual minutes from open to resolve")
    parser.add_argument("--retention-s", type=float, default=5.0, help="retention, real seconds")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args()
    if args.quick:
        args.incidents = 20_000
    args.sample_every = max(args.per_minute, args.incidents // 20 // args.per_minute * args.per_minute)
    configure_logging("warning")
    meta: dict[str, Any] = {
        "meta.date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **report.git(),
        **report.machine(),
        **report.versions(),
        "per_minute": args.per_minute,
        "lifetime": args.lifetime,
        "retention_s": args.retention_s,
    }
    results = []
    for run in args.runs:
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            print(f"{run}: {args.incidents:,} incidents ...", flush=True)
            result = asyncio.run(history(args, run, Path(tmp) / "data", Path(tmp) / "archive"))
            results.append(result)
            print(
                f"{run}: {result['seconds']} s, peak {result['peak_used_memory'] / 1048576:.1f} MiB, "
                f"second half {result['second_half_growth_bytes'] / 1048576:+.1f} MiB, "
                f"after {result['after_keys']} keys / {result['after_index_entries']} index entries",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retention.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2) + "\n")
    (args.out / "RETENTION.md").write_text(render(results, meta))
    print(f"wrote {args.out / 'RETENTION.md'} and {args.out / 'retention.json'}")
    return 0 if all(r["plateau"] for r in results if r["run"] != "expiry") else 1


if __name__ == "__main__":
    raise SystemExit(main())
