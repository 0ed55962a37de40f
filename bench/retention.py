"""Retention: Redis memory over a long synthetic history of incidents opened, escalated, paged and
resolved: does it plateau?

    python -m bench.retention                  # 100,000 incidents per run, 3 runs (~20 minutes here)
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
from engine.archive import PassStats, Retention  # noqa: E402
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
PLATEAU_SLACK = 0.02  # at-rest growth over the history's second half, as a share of the live peak


class TimedRetention(Retention):
    """Records how long each pass takes (it shares this process with the history's load)."""

    pass_seconds: list[float]

    async def sweep(self) -> PassStats:
        started = time.monotonic()
        try:
            return await super().sweep()
        finally:
            self.pass_seconds.append(time.monotonic() - started)


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
            directory = archive if run == "archive" else None
            margin_ms = int(args.archive_margin_s * 1000)
            retention = TimedRetention(
                sweeper, clock, archive_dir=directory, interval_s=1.0, owner="bench", margin_ms=margin_ms
            )
            retention.pass_seconds = []
            task = asyncio.create_task(retention.run())
            empty = await memory(store)
            samples: list[dict[str, Any]] = []
            open_ids: dict[int, list[int]] = {}
            started = time.monotonic()
            paused = 0.0
            steps = args.incidents // args.per_minute
            for step in range(steps + args.lifetime):
                if step < steps:
                    batch = range(step * args.per_minute, (step + 1) * args.per_minute)
                    opened = await asyncio.gather(
                        *(proc.ingest([alert(i, AlertStatus.FIRING)]) for i in batch)
                    )
                    ref = "C1/1767225600.000100"  # as if each first page went to Slack
                    await asyncio.gather(
                        *(store.set_thread(r.incidents[0], "slack", "#ops", ref) for r in opened)
                    )
                    open_ids[step] = list(batch)
                if (old := open_ids.pop(step - args.lifetime, None)) is not None:
                    await asyncio.gather(*(proc.ingest([alert(i, AlertStatus.RESOLVED)]) for i in old))
                await scheduler.cycle()  # the ladders' level 2, due 15 virtual minutes in
                await deliver(store)
                clock.ms += MINUTE_MS
                done = (step + 1) * args.per_minute
                if done % args.sample_every == 0 and step < steps:
                    sample: dict[str, Any] = {"incidents": done}
                    sample |= {f"live_{k}": v for k, v in (await memory(store)).items()}
                    # at rest: the history paused until every incident resolved so far is past its
                    # retention (Redis's clock), then one more sweep: what stays is the open
                    # incidents (a constant number) plus whatever leaks
                    pause = time.monotonic()
                    await asyncio.sleep(args.retention_s + 1)
                    if sweeper is not None:
                        await retention.sweep()
                    sample |= {f"rest_{k}": v for k, v in (await memory(store)).items()}
                    paused += time.monotonic() - pause
                    samples.append(sample)
            seconds = time.monotonic() - started - paused
            # the tail: everything resolved; wait out the retention and sweep once more
            await asyncio.sleep(args.retention_s + 1)
            if sweeper is not None:
                await retention.sweep()
            after = await memory(store)
            retention.stop()
            await task
        finally:
            await store.close()
    archived = await asyncio.to_thread(count_lines, archive) if run == "archive" else 0
    result = summarise(run, empty, samples, after, archived, seconds)
    passes = retention.pass_seconds
    result["sweep_passes"] = len(passes)
    result["sweep_pass_max_s"] = round(max(passes, default=0.0), 2)
    result["sweep_pass_mean_s"] = round(sum(passes) / max(1, len(passes)), 3)
    result["archive_missed"] = result["incidents"] - archived if run == "archive" else None
    return result


def count_lines(directory: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in directory.glob("*.jsonl"))


def summarise(
    run: str,
    empty: dict[str, int],
    samples: list[dict[str, Any]],
    after: dict[str, int],
    archived: int,
    seconds: float,
) -> dict[str, Any]:
    half, last = samples[len(samples) // 2], samples[-1]
    grown = last["rest_used_memory"] - half["rest_used_memory"]
    per_k = grown / ((last["incidents"] - half["incidents"]) / 1000)
    live_peak = max(s["live_used_memory"] for s in samples)
    return {
        "run": run,
        "incidents": last["incidents"],
        "seconds_excluding_pauses": round(seconds, 1),
        "incidents_per_s": round(last["incidents"] / seconds),
        "empty_used_memory": empty["used_memory"],
        "live_peak_used_memory": live_peak,
        "rest_used_memory_at_half": half["rest_used_memory"],
        "rest_used_memory_at_end": last["rest_used_memory"],
        "rest_growth_second_half_bytes": grown,
        "rest_growth_bytes_per_1k_incidents": round(per_k),
        "plateau": grown <= PLATEAU_SLACK * live_peak,
        "after_used_memory": after["used_memory"],
        "after_keys": after["keys"],
        "after_index_entries": after["index"],
        "after_residue_bytes": after["used_memory"] - empty["used_memory"],
        "archived_lines": archived,
        "samples": samples,
    }


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def mib(n: float) -> str:
        return f"{n / 1048576:.2f}"

    def passes(r: dict[str, Any]) -> str:
        return f"{r['sweep_pass_mean_s']:.2f} / {r['sweep_pass_max_s']:.2f}" if r["sweep_passes"] else "-"

    def archived(r: dict[str, Any]) -> str:
        return f"{r['archived_lines']:,} / {r['archive_missed']:,}" if r["run"] == "archive" else "-"

    periods = results[0]["seconds_excluding_pauses"] / meta["retention_s"]
    out = [
        "# Retention: Redis memory over a long history",
        "",
        f"`python -m bench.retention {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" on {meta['meta.machine']}, {meta['meta.date']}, commit {meta['meta.commit']}, "
        f"redis-server {meta.get('meta.redis_server', '?')} (embedded, AOF everysec).",
        "",
        f"Each run: {results[0]['incidents']:,} incidents through the engine's own code on a virtual clock, "
        f"{meta['per_minute']} opened per virtual minute, each resolved {meta['lifetime']} virtual minutes "
        "later after its level-2 page (due at 15 minutes, fired by the scheduler), a chat thread reference "
        "kept per incident, every page taken off the outbox as delivery does. Retention "
        f"{meta['retention_s']:g} s of real time (Redis expires on its own clock): the history spans about "
        f"{periods:.0f} retention periods. Every {meta['sample_every']:,} incidents the history pauses until "
        "all incidents resolved so far are past their retention (plus one sweep): *at rest*, Redis then "
        f"holds the {meta['per_minute'] * meta['lifetime']:,} open incidents and whatever leaks. *Live* is "
        "before the pause: it also holds the retained resolved incidents, whose number follows how fast "
        "this shared machine ran at that moment. Runs: `expiry` = the engine without the retention task "
        "(PEXPIRE alone), `retention` = with engine.archive.Retention sweeping every second, `archive` = "
        "the same with an archive directory: every resolved incident written out "
        f"{meta['archive_margin_s']:g} s before it expires (the engine's default margin is a quarter of "
        "the retention, at most a day: here, passes share one process with the load and take seconds).",
        "",
        "| run | incidents/s | live peak MiB | at rest, half-way MiB | at rest, end MiB "
        "| growth per 1k incidents, B | plateau | after all expired: keys | index entries | residue MiB "
        "| sweep passes, mean / max s | archived / missed |",
        "|---|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r['run']} | {r['incidents_per_s']:,} | {mib(r['live_peak_used_memory'])} "
            f"| {mib(r['rest_used_memory_at_half'])} | {mib(r['rest_used_memory_at_end'])} "
            f"| {r['rest_growth_bytes_per_1k_incidents']:,} | {'yes' if r['plateau'] else 'NO'} "
            f"| {r['after_keys']:,} | {r['after_index_entries']:,} | {mib(r['after_residue_bytes'])} "
            f"| {passes(r)} | {archived(r)} |"
        )
    out += ["", "used_memory in MiB as the history grows (at rest / live) and the index entries at rest:", ""]
    out.append("| incidents | " + " | ".join(f"{r['run']} MiB | {r['run']} index" for r in results) + " |")
    out.append("|---:|" + "---:|---:|" * len(results))
    for row in zip(*(r["samples"] for r in results), strict=True):
        cells = [
            f"{mib(s['rest_used_memory'])} / {mib(s['live_used_memory'])} | {s['rest_index']:,}" for s in row
        ]
        out.append(f"| {row[0]['incidents']:,} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"`plateau`: at-rest used_memory grew over the second half of the history by at most "
        f"{PLATEAU_SLACK:.0%} of the live peak. `after all expired`: every incident resolved, the "
        "retention run out, one last sweep; `residue` is used_memory beyond the empty engine's. "
        "`expiry` keeps one index entry per incident ever opened (list_incidents drops gone entries "
        "only among the newest it reads): the leak the retention task removes.",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 incidents per run")
    parser.add_argument("--per-minute", type=int, default=100, help="incidents opened per virtual minute")
    parser.add_argument("--lifetime", type=int, default=20, help="virtual minutes from open to resolve")
    parser.add_argument("--retention-s", type=float, default=10.0, help="retention, real seconds")
    parser.add_argument(
        "--archive-margin-s", type=float, default=8.0, help="archive this long before expiry, real seconds"
    )
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args()
    if args.quick:
        args.incidents = 20_000
    args.sample_every = max(args.per_minute, args.incidents // 10 // args.per_minute * args.per_minute)
    configure_logging("warning")
    meta: dict[str, Any] = {
        "meta.date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **report.git(),
        **report.machine(),
        **report.versions(),
        "per_minute": args.per_minute,
        "lifetime": args.lifetime,
        "retention_s": args.retention_s,
        "sample_every": args.sample_every,
        "archive_margin_s": args.archive_margin_s,
    }
    results = []
    for run in args.runs:
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            print(f"{run}: {args.incidents:,} incidents ...", flush=True)
            result = asyncio.run(history(args, run, Path(tmp) / "data", Path(tmp) / "archive"))
            results.append(result)
            print(
                f"{run}: {result['incidents_per_s']}/s, at rest {result['rest_used_memory_at_half']:,} -> "
                f"{result['rest_used_memory_at_end']:,} B, after {result['after_keys']} keys / "
                f"{result['after_index_entries']} index entries, {result['archived_lines']} archived",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retention.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2) + "\n")
    (args.out / "RETENTION.md").write_text(render(results, meta))
    print(f"wrote {args.out / 'RETENTION.md'} and {args.out / 'retention.json'}")
    flat = all(r["plateau"] for r in results if r["run"] != "expiry")
    return 0 if flat and not any(r["archive_missed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
