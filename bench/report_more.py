"""RESULTS.md pieces for the parts that size themselves (incident_size, scaling, soak): their
headline lines, their sections, and the incident-size curve before per-alert storage beside this
run's (bench/results/incident_size-before.json, measured once at the commit it names); and the
ingest cells run with the worker paused, beside the same cells with it running."""

import json
import re
from pathlib import Path

from bench import incident_size, scaling, soak
from bench.standalone import Flat, cell

BEFORE = Path(__file__).resolve().parent / "results" / "incident_size-before.json"
FIGURES = ("cpu_ms_per_webhook", "concurrent_cpu_ms_per_webhook", "duplicate_cpu_ms_per_webhook")


PAUSED = re.compile(r"^(ingest\.\w+\.\w+\.a\d+\.c\d+)\.worker_paused\.webhooks_per_s$")


def _paused_cells(f: Flat) -> list[str]:
    return [m[1] for m in map(PAUSED.match, f) if m]


def _ratio(v: object) -> str:
    return "—" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]


def limits(f: Flat) -> list[str]:
    """What bounds the ratio: the HTTP process alone (worker paused) beside the cell as it runs."""
    rows = []
    for pre in _paused_cells(f):
        run, alone = (lambda k, p=pre: f.get(f"{p}.{k}")), (lambda k, p=pre: f.get(f"{p}.worker_paused.{k}"))
        for name, g in (("worker running", run), ("**worker paused**", alone)):
            rows.append(f"| `{pre}` | {name} | {cell(g('webhooks_per_s'))} | {_ratio(g('ratio_to_ceiling'))} "
                        f"| {cell(g('engine_cpu_cores'))} | {cell(g('engine_cpu_ms_per_webhook'))} "
                        f"| {cell(g('worker_cpu_cores'))} | {cell(g('sink_requests'))} "
                        f"| {cell(g('decided_notifications_per_webhook'))} |")  # fmt: skip
    if not rows:
        return []
    return [
        "### What bounds the ratio: the HTTP process alone",
        "",
        "The same cell again with serve's worker stopped (SIGSTOP) for the whole run: no page is sent "
        "and no timer fires, so the HTTP process has the machine to itself beside wrk and Redis. "
        "*Decided per webhook*: entries on the decided outbox (both lanes, every shard) at the end "
        "over the webhooks answered since start, i.e. what delivery must send for each webhook.",
        "",
        "| cell | delivery | webhooks/s | ratio to echo | HTTP CPU cores | HTTP CPU ms / webhook "
        "| worker CPU cores | sink deliveries | decided per webhook |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def headline(f: Flat) -> list[str]:
    out = []
    for pre in _paused_cells(f):
        out.append(
            f"- `{pre}.worker_paused` (the HTTP process alone, no page sent): "
            f"{cell(f.get(f'{pre}.worker_paused.webhooks_per_s'))} webhooks/s, "
            f"**{_ratio(f.get(f'{pre}.worker_paused.ratio_to_ceiling'))}** of the echo, "
            f"{cell(f.get(f'{pre}.worker_paused.engine_cpu_ms_per_webhook'))} ms of HTTP CPU per webhook"
        )
    sizes = [int(s) for s in str(f.get("incident_size.sizes", "")).split(",") if s]
    if sizes:
        lo, hi = min(sizes), max(sizes)
        cpu_lo = cell(f.get(f"incident_size.n{lo}.cpu_ms_per_webhook"))
        cpu_hi = cell(f.get(f"incident_size.n{hi}.cpu_ms_per_webhook"))
        ratio = f.get(f"incident_size.ratio_n{hi}_to_n{lo}.cpu_ms_per_webhook", "—")
        out.append(
            f"- `incident_size`: engine CPU per 3-alert webhook {cpu_lo} ms at N = {lo:,} alerts, "
            f"{cpu_hi} ms at N = {hi:,}: ratio **{ratio}**"
        )
    ratios = {k: v for k, v in f.items() if k.startswith("scaling.ratio_")}
    for k, v in sorted(ratios.items()):
        out.append(f"- `{k}`: **{v}**")
    if "soak.minutes" in f:
        out.append(
            f"- `soak`: engine RSS {f.get('soak.rss_start_mb')} → {f.get('soak.rss_end_mb')} MB over "
            f"{f.get('soak.minutes')} min (growth **{f.get('soak.rss_growth_mb')} MB**)"
        )
    return out


def before_after(f: Flat) -> list[str]:
    """The curve measured before per-alert storage beside this run's, where both have an N."""
    if not BEFORE.exists() or "incident_size.sizes" not in f:
        return []
    before: Flat = json.loads(BEFORE.read_text())
    sizes = [int(s) for s in str(f["incident_size.sizes"]).split(",") if s]
    rows = []
    for n in sizes:
        cells = [f"{n:,}"]
        for name in FIGURES:
            key = f"incident_size.n{n}.{name}"
            cells += [cell(before.get(key)), f"**{cell(f.get(key))}**"]
        rows.append("| " + " | ".join(cells) + " |")
    return [
        f"Before per-alert storage (commit `{before.get('incident_size.engine', '?')}`, "
        "`bench/results/incident_size-before.json`) and now, engine CPU ms per webhook:",
        "",
        "| alerts in the incident | one at a time: before | now | 8 concurrent: before | now "
        "| duplicate: before | now |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def sections(f: Flat) -> list[str]:
    return incident_size.markdown(f) + before_after(f) + scaling.markdown(f) + soak.markdown(f)
