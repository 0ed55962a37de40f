"""`python -m bench.chaos [--short] [--seed N] [--out DIR]`: one chaos run, its figures printed and
written to DIR/CHAOS.md and DIR/chaos.json (default: bench/). Exit status 1 on any lost, doubled or
unexpected message, 2 when the run itself could not finish."""

import argparse
import asyncio
import dataclasses
import json
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.chaos.report import flat, markdown, write
from bench.chaos.run import SHORT, Config, Outcome, run

BENCH = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--seed", type=int, help="the plan's seed (default: a random one, printed)")
    p.add_argument("--short", action="store_true", help="~20 kills in under a minute (the test's size)")
    p.add_argument("--storm-s", type=float, help="new incidents for this long (default 360, short 18)")
    p.add_argument("--out", type=Path, default=BENCH, help="for CHAOS.md and chaos.json (default bench/)")
    p.add_argument("--engine-log-level", default="warning", help="the replicas' log level (default warning)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    return p.parse_args(argv)


def save_raw(o: Outcome, everything: bool) -> Path:
    """Incidents (with timelines), deliveries and kills next to the replicas' logs: those named in
    a problem, or with `everything` all of them."""
    named = "\n".join(o.tally.lost + o.tally.doubled + o.tally.unexpected + o.tally.timeline)
    chosen = {i: d for i, d in o.details.items() if everything or i in named}
    seen = [dataclasses.asdict(s) for s in o.rec.seen if s.incident in chosen]
    kills = [dataclasses.asdict(k) for k in o.kills]
    doc: dict[str, Any] = {"incidents": chosen, "deliveries": seen, "kills": kills}
    path = o.workdir / ("raw.json" if everything else "problems.json")
    path.write_text(json.dumps(doc, indent=1))
    return path


async def main_async(cfg: Config, workdir: Path) -> Outcome:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop what we started
    return await run(cfg, workdir)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    overrides: dict[str, Any] = dict(SHORT) if args.short else {}
    if args.storm_s is not None:
        overrides["storm_s"] = args.storm_s
    cfg = Config(seed=seed, engine_log_level=args.engine_log_level, **overrides)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"chaos run, seed {seed} ({cfg.mode}); work directory {workdir}", flush=True)
    try:
        outcome = asyncio.run(main_async(cfg, workdir))
    except (Exception, KeyboardInterrupt, asyncio.CancelledError) as exc:
        print(f"chaos run did not finish: {type(exc).__name__}: {exc}; logs in {workdir}", file=sys.stderr)
        return 2
    figures = flat(outcome)
    write(figures, args.out)
    print(markdown(figures), flush=True)
    print(f"written: {args.out / 'CHAOS.md'}, {args.out / 'chaos.json'}")
    if outcome.tally.failed:
        saved = save_raw(outcome, args.keep)
        print(f"FAILED: replicas' logs, policies and {saved.name} in {workdir}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"kept: replicas' logs, policies and {save_raw(outcome, True).name} in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
