"""`incidents ACTION ...`: the incidents of a running engine, over its HTTP API (engine/cli/client.py).

  incidents list [--status triggered,acknowledged] [--severity P0] [--label k=v ...] [--limit N]
  incidents show ID
  incidents ack|unack|resolve|escalate ID [--by NAME] [--note TEXT]
  incidents snooze ID --for 30m [--by NAME] [--note TEXT]
  incidents status ID --status identified --message TEXT [--by NAME]
  incidents reassign ID --to user:bob [--by NAME] [--note TEXT]
  incidents open --title T [--severity P1] [--policy P] [--label k=v ...] [--description D] [--reporter NAME]

A table (or one line per incident acted on) for people, `-o json` for scripts: the API's own JSON
(for `list`, the array of incidents).
`--by`/`--reporter` default to $ESCALATION_USER, else the OS user name. Every action takes
`--url` ($ESCALATION_URL, default http://127.0.0.1:9095), `--token` ($ESCALATION_TOKEN), `--timeout`.

Exit codes: 0 ok; 1 the engine refused (4xx: unknown incident, bad credentials, invalid input; the
engine's error is shown); 2 usage error; 3 cannot reach the engine, timeout or 5xx (the URL is shown).
"""

import argparse
import json
import shutil
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from engine.cli.client import Client, add_connection_arguments, client_from, default_user, run_api

HELP = "list, show and act on the incidents of a running engine (ack, resolve, snooze...)"
SIMPLE_ACTIONS = ("ack", "unack", "resolve", "escalate")
UPDATE_STATUSES = ("investigating", "identified", "monitoring", "resolved")
INCIDENTS = "/api/v1/incidents"
COLUMNS = ("ID", "SEV", "STATUS", "AGE", "LEVEL", "ON IT", "TITLE")
MIN_TITLE = 12  # the title keeps at least this much, even on a very narrow terminal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = _sub(sub, "list", "incidents, newest first")
    p.add_argument("--status", help="comma-separated: triggered,acknowledged,snoozed,resolved")
    p.add_argument("--severity", help="comma-separated severities, e.g. P0,P1")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="a label matcher (repeatable)")
    p.add_argument("--limit", type=_positive, help="at most this many (1..1000; engine default 100)")

    p = _sub(sub, "show", "one incident: its alerts, status updates and timeline")
    p.add_argument("id")

    for action in SIMPLE_ACTIONS:
        p = _sub(sub, action, f"{action} an incident")
        p.add_argument("id")
        _by_and_note(p)

    p = _sub(sub, "snooze", "stop paging for a while")
    p.add_argument("id")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 30m, 2h")
    _by_and_note(p)

    p = _sub(sub, "status", "post a status update (UPDATE #n) to everyone paged")
    p.add_argument("id")
    p.add_argument("--status", dest="update_status", required=True, choices=UPDATE_STATUSES)
    p.add_argument("--message", required=True)
    p.add_argument("--by", help="who posts it (default $ESCALATION_USER or your user name)")

    p = _sub(sub, "reassign", "hand the incident to another target, paged now")
    p.add_argument("id")
    p.add_argument("--to", required=True, metavar="TARGET", help="user:NAME, schedule:NAME, team:NAME...")
    _by_and_note(p)

    p = _sub(sub, "open", "open an incident by hand; it pages like an alert would")
    p.add_argument("--title", required=True)
    p.add_argument("--severity", help="a severity (default: the routing rules decide)")
    p.add_argument("--policy", help="an escalation policy (default: the routing rules decide)")
    p.add_argument("--label", action="append", default=[], type=_label, metavar="K=V", help="repeatable")
    p.add_argument("--description", default="")
    p.add_argument("--reporter", help="who reported it (default $ESCALATION_USER or your user name)")


def _sub(
    sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, help: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    add_connection_arguments(p)
    return p


def _by_and_note(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", help="who acts (default $ESCALATION_USER or your user name)")
    p.add_argument("--note", default="", help="why, for the timeline")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def run(args: argparse.Namespace) -> int:
    return run_api("incidents", lambda: _run(client_from(args), args))


def _run(client: Client, args: argparse.Namespace) -> int:
    as_json = args.output == "json"
    if args.action == "list":
        query = {"status": args.status, "severity": args.severity, "label": args.label, "limit": args.limit}
        incidents = client.get(INCIDENTS, query).get("incidents", [])
        print(json.dumps(incidents, indent=2) if as_json else render_table(incidents))
        return 0
    if args.action == "show":
        detail = client.get(_path(args.id))
        print(json.dumps(detail, indent=2) if as_json else render_detail(detail))
        return 0
    if args.action == "open":
        body: dict[str, Any] = {
            "title": args.title,
            "labels": dict(args.label),
            "description": args.description,
            "reporter": args.reporter or default_user(),
        }
        body.update({k: v for k, v in (("severity", args.severity), ("policy", args.policy)) if v})
        inc = client.post(INCIDENTS, body)
    else:
        inc = client.post(_path(args.id, args.action), _action_body(args))
    print(json.dumps(inc, indent=2) if as_json else one_line(inc))
    return 0


def _action_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"by": args.by or default_user()}
    if args.action == "status":
        body.update(status=args.update_status, message=args.message)
        return body
    body["note"] = args.note
    if args.action == "snooze":
        body["duration"] = args.duration
    elif args.action == "reassign":
        body["to"] = args.to
    return body


def _path(incident_id: str, *rest: str) -> str:
    return "/".join([INCIDENTS, *(urllib.parse.quote(p, safe="") for p in (incident_id, *rest))])


# ---- formatting (pure: tested without an engine) ------------------------------------------------


def format_duration(seconds: float | None, *, fine: bool = False) -> str:
    """45s, 5m, 2h10m, 3d; `fine` keeps seconds under an hour (4m30s) and hours under a week."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m}m{rest}s" if fine and rest else f"{m}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d{h}h" if fine and h and d < 7 else f"{d}d"


def parse_stamp(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def age(stamp: str | None, now: datetime | None = None) -> str:
    at = parse_stamp(stamp)
    if at is None:
        return "-"
    return format_duration(((now or datetime.now(UTC)) - at).total_seconds())


def on_it(inc: dict[str, Any]) -> str:
    """Who has it: whoever acknowledged, else whom it was reassigned to, else who was paged."""
    if inc.get("acknowledged_by"):
        return str(inc["acknowledged_by"])
    if inc.get("assignee"):
        return str(inc["assignee"])
    paged = inc.get("paged") or []
    return ", ".join(str(p) for p in paged) if paged else "-"


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """Left-aligned columns two spaces apart; the last column is cut to fit `width` (the terminal)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    cols = len(headers)
    widths = [max([len(headers[i]), *(len(r[i]) for r in rows)]) for i in range(cols - 1)]
    room = max(width - sum(widths) - 2 * (cols - 1), MIN_TITLE)
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [row[i].ljust(widths[i]) for i in range(cols - 1)] + [truncate(row[-1], room)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_table(
    incidents: list[dict[str, Any]], now: datetime | None = None, width: int | None = None
) -> str:
    if not incidents:
        return "no incidents"
    now = now or datetime.now(UTC)
    rows = [
        [
            str(inc.get("id", "?")),
            str(inc.get("severity", "-")),
            str(inc.get("status", "-")),
            age(inc.get("created_at"), now),
            str(inc.get("level", "-")),
            truncate(on_it(inc), 30),
            str(inc.get("title", "")),
        ]
        for inc in incidents
    ]
    return table(COLUMNS, rows, width)


def one_line(inc: dict[str, Any]) -> str:
    """`ID STATUS SEV level N, on it: WHO: TITLE` for the incident an action answered with."""
    who = on_it(inc)
    status = str(inc.get("status", "?"))
    if status == "snoozed" and inc.get("snoozed_until"):
        status += f" until {inc['snoozed_until']}"
    return (
        f"{inc.get('id', '?')} {status} {inc.get('severity', '-')} level {inc.get('level', '-')}, "
        f"on it: {who}: {' '.join(str(inc.get('title', '')).split())}"
    )


def render_detail(inc: dict[str, Any], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    out = [
        f"{inc.get('id', '?')}  {inc.get('severity', '-')}  {inc.get('status', '-')}  {inc.get('title', '')}"
    ]
    facts = [
        (
            "policy",
            f"{inc.get('policy', '-')} (rule {inc.get('rule') or '-'}), level {inc.get('level', '-')}",
        ),
        (
            "opened",
            f"{inc.get('created_at') or '-'} ({age(inc.get('created_at'), now)} ago)"
            + (f" by {inc['opened_by']}" if inc.get("opened_by") else ""),
        ),
        ("on it", on_it(inc)),
        ("paged", ", ".join(inc.get("paged") or []) or "-"),
    ]
    if inc.get("acknowledged_by"):
        facts.append(
            ("acknowledged", _by_at(inc["acknowledged_by"], inc, "acknowledged_at", "time_to_acknowledge_s"))
        )
    if inc.get("snoozed_until"):
        facts.append(("snoozed until", str(inc["snoozed_until"])))
    if inc.get("resolved_at"):
        facts.append(
            ("resolved", _by_at(inc.get("resolved_by") or "-", inc, "resolved_at", "time_to_resolve_s"))
        )
    if inc.get("next_wakeup_at") and inc.get("status") != "resolved":
        facts.append(("next page", str(inc["next_wakeup_at"])))
    if inc.get("next_update_due_at"):
        facts.append(("update due", str(inc["next_update_due_at"])))
    if inc.get("duplicates"):
        facts.append(("duplicates", str(inc["duplicates"])))
    out += [f"  {k + ':':<14} {v}" for k, v in facts]

    alerts = inc.get("alerts") or []
    out.append(f"\nAlerts ({len(alerts)}):")
    for a in alerts:
        labels = a.get("labels") or {}
        notes = a.get("annotations") or {}
        name = labels.get("alertname", a.get("fingerprint", "?"))
        rest = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
        out.append(f"  {a.get('status', '?'):<9} {name}  {rest}".rstrip())
        if notes.get("summary"):
            out.append(f"            {notes['summary']}")
    if not alerts:
        out.append("  (none: opened by hand)")

    updates = inc.get("updates") or []
    if updates:
        out.append(f"\nStatus updates ({len(updates)}):")
        for u in updates:
            head = f"#{u.get('number', '?')} {u.get('at') or '-'}"
            out.append(f"  {head}  {u.get('status', '?')} by {u.get('by', '?')}")
            out.append(f"     {u.get('message', '')}")

    timeline = inc.get("timeline") or []
    out.append(f"\nTimeline ({len(timeline)}):")
    kind_w = max([len(str(e.get("kind", "?"))) for e in timeline] or [0])
    actor_w = min(max([len(str(e.get("actor", "-"))) for e in timeline] or [0]), 24)
    for e in timeline:
        kind, actor = str(e.get("kind", "?")), str(e.get("actor", "-"))
        out.append(
            f"  {e.get('at', '-')}  {kind:<{kind_w}}  {actor:<{actor_w}}  {e.get('text', '')}".rstrip()
        )
    return "\n".join(out)


def _by_at(by: str, inc: dict[str, Any], at_key: str, took_key: str) -> str:
    took = inc.get(took_key)
    after = f", after {format_duration(took, fine=True)}" if took is not None else ""
    return f"by {by} at {inc.get(at_key) or '-'}{after}"
