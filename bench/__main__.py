"""Every benchmark in one command, against a real redis-server on loopback, bounded in time.

    python -m bench                    # default: ~12 minutes on a 2-core VM (at most 15)
    python -m bench --quick            # ~2 minutes: shorter runs, fewer incidents
    python -m bench --only e2e timers  # some parts only
    python -m bench --out /tmp/b       # write RESULTS.md and results.json there instead of bench/

Parts: ingest (wrk: the engine, on a stripped policy and on the shipped policies/ paging loopback
receivers, vs a bare aiohttp echo; skipped with a note if wrk is missing),
timers (lateness, storm, and Redis bytes per open incident), repeats (CPU per webhook), e2e
(webhook in -> PagerDuty page out). Writes RESULTS.md (tables, machine, versions, date, commit,
time per part) and results.json (flat keys such as `ingest.shipped.mix.a3.c32.ratio_to_ceiling`).
Every server it starts (engine, echo, embedded redis-server, sinks) is stopped when it ends,
fails, or gets Ctrl-C / SIGTERM.
"""

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import ingest, report
from bench.parts import PARTS, PLANS, Flat, ingest_available
from engine import gctune

BENCH = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter runs, fewer incidents: ≤ 3 minutes")
    mode.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for the tests
    parser.add_argument("--only", nargs="+", choices=list(PARTS), metavar="NAME",
                        help=f"run only these parts: {', '.join(PARTS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCH, help="directory for RESULTS.md and results.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "default"]
    signal.signal(signal.SIGTERM, ingest._exit_once)  # unwind through the finally blocks: stop servers
    signal.signal(signal.SIGINT, ingest._exit_once)
    started = time.monotonic()
    gctune.tune()  # the parts that run the engine's code in this process get what serve and its worker get

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    flat: Flat = {
        "meta.date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "meta.mode": plan.mode,
        "meta.quick": plan.mode == "quick",
        "meta.loadavg_1m_start": round(os.getloadavg()[0], 2),
        **report.git(),
        **report.machine(),
        **report.versions(),
    }
    progress(f"bench ({plan.mode}) at {flat['meta.commit']} on {flat['meta.machine']}")
    failed = False
    for name, run in PARTS.items():
        if args.only and name not in args.only:
            continue
        why_not = ingest_available() if name == "ingest" else None
        if why_not:
            flat[f"meta.skipped.{name}"] = why_not
            progress(f"{name}: skipped: {why_not}")
            continue
        progress(f"{name}: start")
        t0 = time.monotonic()
        try:
            flat |= run(plan, progress)
        except (asyncio.CancelledError, KeyboardInterrupt):  # SIGTERM / Ctrl-C inside a part
            progress(f"{name}: interrupted: servers stopped, nothing written")
            return 130
        except Exception as e:
            failed = True
            traceback.print_exc()
            flat[f"meta.failed.{name}"] = f"{type(e).__name__}: {e}"[:300]
            progress(f"{name}: FAILED: {e}")
        flat[f"meta.seconds.{name}"] = round(time.monotonic() - t0, 1)
        progress(f"{name}: done in {flat[f'meta.seconds.{name}']:.0f} s")
    flat["meta.seconds.total"] = round(time.monotonic() - started, 1)
    flat["meta.loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    ordered = {k: v for k, v in flat.items() if k.startswith("meta.")} | flat  # meta.* first
    (args.out / "results.json").write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
    (args.out / "RESULTS.md").write_text(report.render(flat, report.command_line()))
    progress(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
