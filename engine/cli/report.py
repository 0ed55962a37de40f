"""`report [--since 30d] [-o table|json|markdown]`: the engine's incident report over a period.

`-o json` is the engine's JSON as is (for scripts), `-o markdown` its Markdown rendering; the table
is a readable summary of the JSON that prints whatever sections the engine sends: the per-severity
rows (incidents, MTTA/MTTR median and p90, targets met/missed), pages per person, the noisiest
alerts... Durations in seconds (keys ending in `_s`, or under mtta/mttr) are shown as 4m30s, 2h10m.
Takes `--url` ($ESCALATION_URL, default http://127.0.0.1:9095), `--token` ($ESCALATION_TOKEN) and
`--timeout` (see engine/cli/client.py).

Exit codes: 0 ok; 1 the engine refused (4xx, e.g. a bad --since; the engine's error is shown);
2 usage error; 3 cannot reach the engine, timeout or 5xx (the URL is shown).
"""

import argparse
import json
from collections.abc import Iterable
from typing import Any

from engine.cli.client import Client, add_connection_arguments, client_from, run_api
from engine.cli.incidents import format_duration, table

HELP = "MTTA/MTTR, targets, pages per person and the noisiest alerts over a period"
REPORTS = "/api/v1/reports"
DURATION_WORDS = ("mtta", "mttr", "seconds", "duration", "time_to")
# short column names for the keys the engine sends today; any other key is shown by its own name
HEADERS = {
    "acknowledged": "acked",
    "ack_target_s": "ack target",
    "target_met": "met",
    "target_missed": "missed",
    "target_pending": "pending",
    "out_of_hours": "out of hours",
}
HIDDEN = ("description",)  # long prose that would push every number off the screen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="30d", help="how far back, e.g. 7d, 30d (default 30d)")
    parser.add_argument("-o", "--output", choices=["table", "json", "markdown"], default="table")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_api("report", lambda: _run(client_from(args), args))


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.output == "markdown":
        text = client.get_text(REPORTS, {"since": args.since, "format": "markdown"})
        print(text.rstrip("\n"))
        return 0
    doc = client.get(REPORTS, {"since": args.since})
    print(json.dumps(doc, indent=2) if args.output == "json" else render_report(doc))
    return 0


# ---- the table: tolerant of the report's exact shape ---------------------------------------------


def render_report(doc: Any, width: int | None = None) -> str:
    if not isinstance(doc, dict):
        return _value("", doc)
    out = [f"{_title(k)}: {_value(k, v)}" for k, v in doc.items() if not isinstance(v, dict | list)]
    for key, value in doc.items():
        if isinstance(value, dict | list):
            out += [
                "",
                f"{_title(key)}:",
                *("  " + line for line in _section(key, value, width).splitlines()),
            ]
    return "\n".join(out).strip("\n") or "(empty report)"


def _section(key: str, value: dict[str, Any] | list[Any], width: int | None) -> str:
    if not value:
        return "(none)"
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value):
            flat = [_flatten(v) for v in value]
            headers = _union(flat)
            return _table(headers, [[_value(h, f.get(h)) for h in headers] for f in flat], width)
        return ", ".join(_value(key, v) for v in value)
    if all(isinstance(v, dict) for v in value.values()):  # rows keyed by name: {"P0": {...}, ...}
        flat = [_flatten(v) for v in value.values()]
        headers = _union(flat)
        rows = [
            [str(name), *(_value(h, f.get(h)) for h in headers)] for name, f in zip(value, flat, strict=True)
        ]
        return _table([_row_name(key), *headers], rows, width)
    if all(not isinstance(v, dict | list) for v in value.values()):  # {"alice": 12, ...}
        wide = max(len(str(k)) for k in value)
        return "\n".join(f"{str(k).ljust(wide)}  {_value(k, v, parent=key)}" for k, v in value.items())
    record = _flatten(value)
    wide = max(len(_title(k)) for k in record)
    return "\n".join(f"{_title(k).ljust(wide)}  {_value(k, v)}" for k, v in record.items())


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        name = f"{prefix}{k}"
        if k in HIDDEN or (prefix and k == "count" and "median" in record):  # mtta's count: acked
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _union(records: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _table(headers: list[str], rows: list[list[str]], width: int | None) -> str:
    return table([_title(h).upper() for h in headers], rows, width)


def _row_name(section: str) -> str:
    words = section.lower().replace("by_", "").replace("per_", "").rstrip("s")
    return words or "name"


def _title(key: str) -> str:
    """`mtta_s.median` -> "mtta p50", `target_met` -> "met", `ack_target_s` -> "ack target"."""
    parts = []
    for segment in key.split("."):
        if segment in HEADERS:
            parts.append(HEADERS[segment])
            continue
        words = [w for w in segment.split("_") if w]
        if len(words) > 1 and words[-1] in ("s", "seconds"):
            words = words[:-1]
        parts.append(" ".join("p50" if w == "median" else w for w in words))
    return " ".join(p for p in parts if p) or key


def _is_duration(key: str) -> bool:
    segments = key.lower().split(".")
    if segments[-1] in ("count", "incidents", "alerts", "pages"):
        return False
    return any(seg.endswith(("_s", "_seconds")) or seg in DURATION_WORDS for seg in segments) or any(
        w in segments[-1] for w in DURATION_WORDS
    )


def _value(key: str, value: Any, parent: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if _is_duration(key) or (parent and _is_duration(parent)):
            return format_duration(value, fine=True)
        if isinstance(value, float):
            return f"{value:.2f}".rstrip("0").rstrip(".")
        return str(value)
    if isinstance(value, list):
        return ", ".join(_value(key, v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(k, v)}" for k, v in value.items()) or "-"
    return " ".join(str(value).split())
