"""The cost of a repeated webhook: the engine's own CPU per webhook, in process, no HTTP.

Alertmanager re-sends every group each `group_interval`, and an HA pair sends it twice: most
webhooks an engine sees are repeats of alerts it already holds. This opens G groups (the 3-alert
fixture, each group its own incidents), then feeds R rounds of every group again, C at a time,
through `Processor.ingest` against the embedded redis-server (AOF, fsync always), and reports
the engine process's CPU time per repeated webhook and the commit conflicts among them.

CPU time, not wall time: the VM this runs on is noisy, and CPU per webhook is what a repeat
costs whatever else the machine is doing. Bounded: G * (R + 1) webhooks, then it stops.

    python bench/repeats.py [--groups 300] [--rounds 5] [--concurrency 32] [--tag TAG]
"""

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from engine.ingest.alertmanager import parse_payload  # noqa: E402
from engine.logs import configure_logging  # noqa: E402
from engine.metrics import Metrics  # noqa: E402
from engine.policy.loader import load_policies  # noqa: E402
from engine.processor import Processor  # noqa: E402
from engine.store.connect import connect  # noqa: E402
from engine.store.embedded import EmbeddedRedis  # noqa: E402
from engine.store.redis import RedisStore  # noqa: E402

FIXTURE = BENCH.parent / "tests" / "fixtures" / "02-firing-group.json"


class Clock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


def group(i: int) -> dict[str, object]:
    raw: dict[str, Any] = json.loads(FIXTURE.read_text())
    raw["groupKey"] = f'{{}}:{{alertname="Bench{i}"}}'
    for n, a in enumerate(raw["alerts"]):
        a["fingerprint"] = f"{i:012x}{n:04x}"
        a["labels"]["instance"] = f"host-{i}-{n}"
    return raw


def conflicts_so_far(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("escalation_commit_conflicts_total") or 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def feed(proc: Processor, webhooks: list[dict[str, object]], concurrency: int) -> tuple[float, float]:
    """(wall s, CPU s) to ingest every webhook, `concurrency` at a time."""
    queue = list(webhooks)

    async def worker() -> None:
        while queue:
            await proc.ingest(parse_payload(queue.pop())[1])

    cpu0, wall0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall0, cpu_s() - cpu0


async def run(args: argparse.Namespace) -> dict[str, object]:
    policies = load_policies(BENCH / "policies" / "ingest")
    webhooks = [group(i) for i in range(args.groups)]
    with tempfile.TemporaryDirectory(prefix="bench-repeats-") as tmp:
        async with EmbeddedRedis(Path(tmp) / "data", fsync="always") as server:
            store = RedisStore(await connect(server.url))
            metrics = Metrics(CollectorRegistry())
            proc = Processor(store, lambda: policies, Clock(), metrics)
            try:
                open_wall, open_cpu = await feed(proc, webhooks, args.concurrency)
                opened_conflicts = conflicts_so_far(metrics)
                wall, cpu = await feed(proc, webhooks * args.rounds, args.concurrency)
                conflicts = conflicts_so_far(metrics) - opened_conflicts
            finally:
                await store.close()
    repeats = args.groups * args.rounds
    return {
        "groups": args.groups,
        "concurrency": args.concurrency,
        "new_webhooks": args.groups,
        "new_cpu_ms_per_webhook": round(open_cpu * 1000 / args.groups, 3),
        "new_per_s": round(args.groups / open_wall, 1),
        "repeat_webhooks": repeats,
        "repeat_cpu_ms_per_webhook": round(cpu * 1000 / repeats, 3),
        "repeat_per_s": round(repeats / wall, 1),
        "repeat_commit_conflicts": conflicts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    configure_logging("warning", "json")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH.parent, capture_output=True, text=True
    ).stdout.strip()
    result = {"engine": commit, **asyncio.run(run(args))}
    print(json.dumps(result))
    if args.tag:
        out = BENCH / "results" / f"repeats-{time.strftime('%Y-%m-%d')}-{args.tag}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
