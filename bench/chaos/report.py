"""The run's figures as flat keys (chaos.json) and as tables (CHAOS.md), like the benchmarks' files."""

import datetime
import json
from pathlib import Path
from typing import Any

from bench.chaos.count import pct
from bench.chaos.policy import CHANNELS, LEVEL_OFFSETS_S
from bench.chaos.run import Outcome, loadavg
from bench.chaos.workload import KINDS
from bench.report import git, machine, versions

Flat = dict[str, Any]
MAX_LISTED = 50  # problems listed by name in the files (all are counted)


def _ms(values: list[float], prefix: str) -> Flat:
    out: Flat = {f"{prefix}.count": len(values)}
    for name, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        v = pct(values, q)
        out[f"{prefix}.{name}_ms"] = None if v is None else round(v * 1000)
    return out


def flat(o: Outcome) -> Flat:
    t, cfg = o.tally, o.config
    f: Flat = {
        "chaos.passed": not t.failed,
        "chaos.seed": cfg.seed,
        "chaos.mode": cfg.mode,
        "chaos.seconds": round(o.seconds, 1),
        "chaos.storm_seconds": round(o.storm_seconds, 1),
        "chaos.replicas": cfg.replicas,
        "chaos.kills": len(o.kills),
        "chaos.kills_while_starting": sum(1 for k in o.kills if not k.was_ready),
        "chaos.replica_starts": o.replica_starts,
        "chaos.replica_failed_starts": o.failed_starts,
        "chaos.api_retries": o.client_retries,
        "chaos.incidents": t.incidents,
        "chaos.incidents_opened_over_s": round(max((life.start_s for life in o.lives), default=0.0), 1),
        "chaos.outbox_left": o.outbox_left,
    }
    f.update({f"chaos.incidents.{kind}": n for kind, n in sorted(t.kinds.items())})
    f["chaos.incidents.early_ack_fallbacks"] = t.early_fallbacks
    f["chaos.incidents.ambiguous"] = t.ambiguous
    for action, name in (("trigger", "pages"), ("acknowledge", "acks"), ("resolve", "resolves")):
        f[f"chaos.{name}.expected"] = t.expected[action]
        f[f"chaos.{name}.received"] = t.received[action]
        f[f"chaos.{name}.redelivered"] = t.redelivered[action]
    f["chaos.lost"] = len(t.lost)
    f["chaos.doubled"] = len(t.doubled)
    f["chaos.unexpected"] = len(t.unexpected)
    f["chaos.timeline_problems"] = len(t.timeline)
    f["chaos.errors"] = len(t.errors)
    for channel in CHANNELS:
        for what in ("expected", "received", "redelivered"):
            f[f"chaos.channel.{channel}.{what}"] = t.by_channel[channel][what]
            for action in ("trigger", "acknowledge", "resolve"):
                f[f"chaos.channel.{channel}.{action}.{what}"] = t.by_channel[channel][f"{action}.{what}"]
        f[f"chaos.channel.{channel}.requests"] = o.rec.requests[channel]
        f[f"chaos.channel.{channel}.refused"] = o.rec.refused[channel]
    f.update(_ms(t.lateness_s, "chaos.page_lateness"))
    f.update(_ms(t.mirror_s, "chaos.ack_resolve_latency"))
    f.update(_ms(t.reclaim_s, "chaos.reclaim"))
    f.update(_ms(t.decided_s, "chaos.timer_lateness"))
    f.update(_ms(t.delivery_s, "chaos.delivery_latency"))
    f["slowest_messages"] = [f"{late:.1f}s late: {what}" for late, what in t.slowest]
    f["slowest_reclaims"] = [f"{delay:.1f}s: {what}" for delay, what in t.slowest_reclaims]
    f["chaos.held_at_kill"] = sum(len(k.held) for k in o.kills)
    f["chaos.held_at_kill.arrived_before_kill"] = t.held_arrived_before
    f["chaos.held_at_kill.never_arrived"] = t.held_never
    f.update(_ms(t.gap_s, "chaos.redelivery_gap"))
    f.update(_ms(o.start_s, "chaos.replica_start"))
    f.update(_ms(o.lag_s, "chaos.driver_loop_lag"))
    for name in ("storm_s", "min_kills", "rate_per_s", "lanes", "claim_idle_s", "quiet_s", "wait_s"):
        f[f"config.{name}"] = getattr(cfg, name)
    f["config.starting_share"] = cfg.starting_share
    f["config.kill_every_s"] = list(cfg.kill_every_s)
    f["config.down_s"] = list(cfg.down_s)
    f["config.receiver_delay_s"] = list(cfg.delay_s)
    f["config.level_offsets_s"] = list(LEVEL_OFFSETS_S)
    f["problems"] = (t.lost + t.doubled + t.unexpected + t.timeline + t.errors)[:MAX_LISTED]
    f["meta.date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    f.update(machine())
    f.update(versions())
    f.update(git())
    f.pop("meta.wrk", None)
    f["meta.loadavg_before"] = o.load
    f["meta.loadavg_after"] = loadavg()
    return f


def _v(value: Any) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def markdown(f: Flat) -> str:
    verdict = "**passed**: nothing lost, nothing doubled" if f["chaos.passed"] else "**FAILED**"
    lines = [
        "# Chaos run: replicas killed while paging",
        "",
        'Written by `python -m bench.chaos` (bench/README.md, "Chaos"); `chaos.json` has the same figures.',
        "",
        f"- {verdict}; seed **{f['chaos.seed']}** (`--seed {f['chaos.seed']}` repeats the plan), "
        f"mode {f['chaos.mode']}",
        f"- {f['chaos.replicas']} replicas on one redis-server (AOF, fsync always); "
        f"{f['chaos.kills']} SIGKILLs ({f['chaos.kills_while_starting']} of a replica still starting), "
        f"{f['chaos.replica_starts']} starts; ladders at "
        f"{', '.join(f'{s}s' for s in f['config.level_offsets_s'])}; "
        f"claim idle {f['config.claim_idle_s']}s; receivers answer after "
        f"{f['config.receiver_delay_s'][0]}-{f['config.receiver_delay_s'][1]} s",
        f"- {f['chaos.incidents']} incidents opened over {f['chaos.incidents_opened_over_s']} s; run took "
        f"{f['chaos.seconds']} s (storm {f['chaos.storm_seconds']} s); scripts: "
        + ", ".join(f"{kind} {f.get(f'chaos.incidents.{kind}', 0)}" for kind in KINDS)
        + f" (early_ack fallbacks {f['chaos.incidents.early_ack_fallbacks']}, ambiguous "
        f"{f['chaos.incidents.ambiguous']}); API calls sent again after a replica died: "
        f"{f['chaos.api_retries']}",
        f"- {f['meta.date']}, commit `{f['meta.commit']}`"
        + (" (engine/ had uncommitted changes)" if f["meta.engine_uncommitted_changes"] else "")
        + f"; {f['meta.machine']}, load average {f['meta.loadavg_before']} before and "
        f"{f['meta.loadavg_after']} after; Python {f['meta.python']}, redis-server {f['meta.redis_server']}",
        "",
        "| messages | expected | received | lost | redelivered (extra copies) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("pages", "acks", "resolves"):
        e, r = f[f"chaos.{name}.expected"], f[f"chaos.{name}.received"]
        lines.append(f"| {name} | {_v(e)} | {_v(r)} | {_v(e - r)} | {_v(f[f'chaos.{name}.redelivered'])} |")
    pd = "chaos.channel.pagerduty."
    lines += [
        "",
        f"Mirrored to PagerDuty: {_v(f[pd + 'acknowledge.received'])} of "
        f"{_v(f[pd + 'acknowledge.expected'])} "
        f"acknowledgements and {_v(f[pd + 'resolve.received'])} of {_v(f[pd + 'resolve.expected'])} "
        "resolutions, each a distinct event.",
        "",
        f"Doubled: **{f['chaos.doubled']}**. Unexpected (e.g. a page after an acknowledgement): "
        f"**{f['chaos.unexpected']}**. Timeline disagreements: **{f['chaos.timeline_problems']}**. "
        f"Script errors: **{f['chaos.errors']}**.",
        "",
        "| channel | expected | received | redelivered | requests | refused |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for ch in CHANNELS:
        p = f"chaos.channel.{ch}."
        lines.append(
            f"| {ch} | {_v(f[p + 'expected'])} | {_v(f[p + 'received'])} | {_v(f[p + 'redelivered'])} "
            f"| {_v(f[p + 'requests'])} | {_v(f[p + 'refused'])} |"
        )
    lines += [
        "",
        "| lateness | count | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, what in (
        ("page_lateness", "page arrival - its level's deadline"),
        ("timer_lateness", 'level decided (timeline "paged") - its deadline'),
        ("delivery_latency", "arrival - decided (pages, acks, resolves)"),
        ("ack_resolve_latency", "ack/resolve arrival - when it was done"),
        ("reclaim", "messages pending on a killed replica: kill -> arrival (reclaim delay)"),
        ("redelivery_gap", "first copy -> its redelivery"),
        ("replica_start", "a replica's start: spawn -> ready"),
        ("driver_loop_lag", "this run's own event loop (receivers, driver): lag of a 0.1 s sleep"),
    ):
        p = f"chaos.{key}."
        lines.append(
            f"| {what} | {_v(f[p + 'count'])} | {_v(f[p + 'p50_ms'])} | {_v(f[p + 'p99_ms'])} "
            f"| {_v(f[p + 'max_ms'])} |"
        )
    lines += [
        "",
        f"At the kills, the killed replicas' delivery consumers had {_v(f['chaos.held_at_kill'])} messages "
        f"pending; {_v(f['chaos.reclaim.count'])} reached their receivers after the kill (the reclaim delay "
        f"above), {_v(f['chaos.held_at_kill.arrived_before_kill'])} had arrived just before it and were not "
        "sent again (a page whose incident was acknowledged or resolved meanwhile is dropped, and the "
        f"timeline says so), {_v(f['chaos.held_at_kill.never_arrived'])} never arrived.",
    ]
    for key, title in (("slowest_messages", "Latest messages"), ("slowest_reclaims", "Slowest reclaims")):
        if f[key]:
            lines += ["", f"{title}:", ""] + [f"- {line}" for line in f[key]]
    if f["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in f["problems"]]
    return "\n".join(lines) + "\n"


def write(f: Flat, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(f, indent=1, sort_keys=True) + "\n")
    (out / "CHAOS.md").write_text(markdown(f))
