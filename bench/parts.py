"""The parts of `python -m bench`: sizes per mode, and each part run through the existing scripts'
functions, its figures returned as flat, self-explaining keys (`ingest.shipped.mix.a3.c32.webhooks_per_s`)."""

import argparse
import asyncio
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import e2e, incident_size, ingest_matrix, repeats, scaling, soak, timers
from bench.ingest_matrix import Cell
from engine.logs import configure_logging

Progress = Callable[[str], None]
Flat = dict[str, float | int | str | bool]


@dataclass(frozen=True)
class Plan:
    """How big every part is in one mode."""

    mode: str  # default | quick | smoke
    ingest_cells: tuple[Cell, ...]  # (policy, mix, alerts per webhook, connections)
    ingest_warmup_s: int
    ingest_duration_s: int
    ingest_echo_warmup_s: int
    ingest_echo_duration_s: int
    # (open incidents, due across s, "rate" | "storm" | "burst": all due at one instant)
    timer_runs: tuple[tuple[int, float, str], ...]
    timer_lead_s: float
    timer_max_wait_s: float
    repeats_groups: int
    repeats_rounds: int
    e2e_rate: int
    e2e_seconds: float
    e2e_drain_s: float
    quiet_wait_s: float  # before each ingest run, wait this long at most for an idle machine
    ingest_quiet_budget_s: float  # and this long at most over all of them


PLANS = {
    "default": Plan(
        mode="default",
        # each of payload 1/3/20, connections 1/32/128 and new/mix on both policies, the shipped
        # mix at 3 alerts and 32 connections (the headline) first; not the whole cross product
        ingest_cells=(
            Cell("shipped", "mix", 3, 32),
            Cell("shipped", "mix", 3, 32, worker_paused=True),  # what bounds the ratio
            Cell("stripped", "mix", 3, 32),
            Cell("shipped", "new", 3, 32),
            Cell("shipped", "new", 3, 32, worker_paused=True),
            Cell("stripped", "new", 3, 32),
            Cell("shipped", "mix", 1, 32),
            Cell("stripped", "new", 1, 32),
            Cell("shipped", "mix", 20, 32),
            Cell("stripped", "mix", 20, 32),
            Cell("shipped", "mix", 3, 1),
            Cell("stripped", "mix", 3, 1),
            Cell("shipped", "mix", 3, 128),
            Cell("stripped", "mix", 3, 128),
        ),
        ingest_warmup_s=3,
        ingest_duration_s=10,
        ingest_echo_warmup_s=1,
        ingest_echo_duration_s=4,
        timer_runs=(
            (1_000, 2, "rate"),
            (10_000, 20, "rate"),
            (100_000, 200, "rate"),
            (100_000, 10, "storm"),
            (100_000, 0, "burst"),
        ),
        timer_lead_s=3,
        timer_max_wait_s=60,
        repeats_groups=300,
        repeats_rounds=5,
        e2e_rate=100,
        e2e_seconds=20,
        e2e_drain_s=15,
        quiet_wait_s=15,
        ingest_quiet_budget_s=40,
    ),
    "quick": Plan(
        mode="quick",
        ingest_cells=(
            Cell("shipped", "mix", 3, 32),
            Cell("stripped", "mix", 3, 32),
            Cell("stripped", "new", 3, 32),
        ),
        ingest_warmup_s=2,
        ingest_duration_s=6,
        ingest_echo_warmup_s=1,
        ingest_echo_duration_s=3,
        timer_runs=((5_000, 10, "rate"), (10_000, 1, "storm"), (10_000, 0, "burst")),
        timer_lead_s=2,
        timer_max_wait_s=15,
        repeats_groups=100,
        repeats_rounds=3,
        e2e_rate=100,
        e2e_seconds=10,
        e2e_drain_s=10,
        quiet_wait_s=5,
        ingest_quiet_budget_s=8,
    ),
    "smoke": Plan(
        mode="smoke",
        ingest_cells=(
            Cell("stripped", "mix", 3, 8),
            Cell("shipped", "mix", 3, 8),
            Cell("shipped", "mix", 3, 8, worker_paused=True),
        ),
        ingest_warmup_s=1,
        ingest_duration_s=2,
        ingest_echo_warmup_s=1,
        ingest_echo_duration_s=1,
        timer_runs=((300, 1, "rate"), (1_000, 0.5, "storm")),
        timer_lead_s=1,
        timer_max_wait_s=10,
        repeats_groups=20,
        repeats_rounds=2,
        e2e_rate=100,
        e2e_seconds=2,
        e2e_drain_s=10,
        quiet_wait_s=0,
        ingest_quiet_budget_s=0,
    ),
}


def k_label(n: int) -> str:
    """1000 -> 1k, 100000 -> 100k, 300 -> 300."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _reinstall(handler: Any) -> None:
    """asyncio.run() leaves SIGTERM at SIG_DFL after a part that set a loop handler: put ours back."""
    signal.signal(signal.SIGTERM, handler)


# ---- ingest: wrk against the bare echo (the ceiling) and the engine (bench/ingest_matrix.py) ----


def ingest_available() -> str | None:
    """None when the part can run, otherwise why not."""
    return None if shutil.which("wrk") else "wrk not found (apt-get install -y wrk): ingest not measured"


def run_ingest(plan: Plan, progress: Progress) -> Flat:
    sizes = ingest_matrix.Sizes(
        plan.ingest_cells,
        plan.ingest_warmup_s,
        plan.ingest_duration_s,
        plan.ingest_echo_warmup_s,
        plan.ingest_echo_duration_s,
        plan.quiet_wait_s,
        plan.ingest_quiet_budget_s,
    )
    return ingest_matrix.run(sizes, progress)


# ---- timers (and Redis memory per open incident): bench/timers.py's run() in this process ----


def _memory_keys(r: dict[str, Any]) -> Flat:
    flat: Flat = {
        "memory.redis_bytes_per_incident": r["used_memory_per_incident_B"],
        "memory.measured_at_open_incidents": r["incidents"],
    }
    for name, value in r["memory_breakdown_B"].items():
        if name != "keys":
            part = re.sub(r"\W+", "_", name.removesuffix(" (per incident)")).strip("_")
            flat[f"memory.breakdown.{part}_bytes"] = value
    return flat


def run_timers(plan: Plan, progress: Progress) -> Flat:
    flat: Flat = {}
    handler = signal.getsignal(signal.SIGTERM)
    memory_from = 0
    for k, spread, kind in plan.timer_runs:
        rate = round(k / spread) if spread else None
        pre = f"timers.{k_label(k)}." + (kind if kind != "rate" else f"rate_{rate}")
        when = f"due across {spread:g} s ({rate:,}/s)" if rate else "all due at one instant"
        progress(f"timers {pre}: opening {k:,} incidents, {when}")
        ns = argparse.Namespace(
            incidents=k,
            spread=spread,
            lead=plan.timer_lead_s,
            fsync="always",
            concurrency=32,
            max_wait=plan.timer_max_wait_s,
            profile=None,
        )
        try:
            r = asyncio.run(timers.run(ns))
        finally:
            _reinstall(handler)
        lat = r["lateness_ms"]
        window_s = spread + max(0.0, r["last_fire_after_last_due_s"])
        flat |= {
            f"{pre}.open_incidents": k,
            f"{pre}.due_across_s": spread,
            **({f"{pre}.due_per_s": rate} if rate else {}),
            f"{pre}.fired": r["fired"],
            f"{pre}.unfired": k - r["fired"],
            f"{pre}.fired_per_s": round(r["fired"] / window_s) if window_s > 0 else 0,
            f"{pre}.lateness_p50_ms": lat["p50"],
            f"{pre}.lateness_p99_ms": lat["p99"],
            f"{pre}.lateness_max_ms": lat["max"],
            f"{pre}.scheduler_cpu_cores": r["cpu_cores_while_firing"]["scheduler process"],
            f"{pre}.redis_cpu_cores": r["cpu_cores_while_firing"]["redis-server"],
            f"{pre}.opened_per_s": r["open_per_s"],
        }
        progress(
            f"timers {pre}: fired {r['fired']:,}/{k:,}, lateness p50 {lat['p50']:.0f} ms, "
            f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms; {r['used_memory_per_incident_B']} B/incident"
        )
        if kind == "rate" and k > memory_from:  # the largest steady run gives the memory figure
            memory_from = k
            flat |= _memory_keys(r)
    return flat


# ---- repeats: CPU per new / repeated webhook, in process (bench/repeats.py's run()) ----


def run_repeats(plan: Plan, progress: Progress) -> Flat:
    configure_logging("warning", "json")
    ns = argparse.Namespace(groups=plan.repeats_groups, rounds=plan.repeats_rounds, concurrency=32)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        r: dict[str, Any] = asyncio.run(repeats.run(ns))
    finally:
        _reinstall(handler)
    progress(
        f"repeats: new {r['new_cpu_ms_per_webhook']} CPU ms/webhook, "
        f"repeat {r['repeat_cpu_ms_per_webhook']} CPU ms/webhook"
    )
    return {
        "repeats.groups": r["groups"],
        "repeats.repeat_webhooks": r["repeat_webhooks"],
        "repeats.new_cpu_ms_per_webhook": r["new_cpu_ms_per_webhook"],
        "repeats.new_webhooks_per_s": r["new_per_s"],
        "repeats.repeat_cpu_ms_per_webhook": r["repeat_cpu_ms_per_webhook"],
        "repeats.repeat_webhooks_per_s": r["repeat_per_s"],
        "repeats.repeat_commit_conflicts": int(r["repeat_commit_conflicts"]),
    }


# ---- e2e: webhook in -> PagerDuty page at a local sink (bench/e2e.py) ----


async def _e2e(plan: Plan) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop the engine
    return await e2e.measure(plan.e2e_rate, plan.e2e_seconds, plan.e2e_drain_s)


def run_e2e(plan: Plan, progress: Progress) -> Flat:
    progress(f"e2e: {plan.e2e_rate} new-incident webhooks/s for {plan.e2e_seconds:g} s")
    handler = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    try:
        r = asyncio.run(_e2e(plan))
    finally:
        _reinstall(handler)
    pre = f"e2e.rate_{plan.e2e_rate}"
    flat: Flat = {
        f"{pre}.{k}": v
        for k, v in r.items()
        if v is not None and k not in ("rate", "webhook_answers") and not isinstance(v, dict)
    }
    progress(
        f"e2e: {r['pages_arrived']}/{r['webhooks_sent']} pages arrived, latency p50 "
        f"{r.get('latency_p50_ms', '-')} ms, p99 {r.get('latency_p99_ms', '-')} ms "
        f"({time.monotonic() - started:.0f} s)"
    )
    return flat


def _by_mode(run_part: Callable[[str, Progress], Flat]) -> Callable[[Plan, Progress], Flat]:
    """A part that sizes itself by mode name (incident_size, scaling, soak)."""

    def run(plan: Plan, progress: Progress) -> Flat:
        return run_part(plan.mode, progress)

    return run


PARTS: dict[str, Callable[[Plan, Progress], Flat]] = {
    "ingest": run_ingest,
    "timers": run_timers,
    "repeats": run_repeats,
    "e2e": run_e2e,
    "incident_size": _by_mode(incident_size.run_part),
    "scaling": _by_mode(scaling.run_part),
    "soak": _by_mode(soak.run_part),
}
