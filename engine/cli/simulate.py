"""`simulate --alert FILE [--at TIME] [--ack-at OFFSET] [--resolve-at OFFSET]`: a dry run of every page.

FILE is an Alertmanager webhook (payload version 4) or one label set ({"alertname": "...", ...}),
which is one firing alert. The alerts arrive at --at (default now); offsets are durations from
then ("4m"). The engine's own state machine runs on a virtual clock for up to 7 days.
A table for people; `-o json` for scripts, one document:
  {"at", "ack_at", "resolve_at",
   "pages": [{"offset_s", "at", "incident", "level", "target", "user", "channel", "address",
              "action", "note", "held_until"}]}
level is 1-based (0 for acknowledge/resolve notifications); channel "" means the target reached
nobody (note says why); times are RFC 3339 in --at's offset. Exit 0; 2 on a usage error (an
unreadable or invalid FILE, a bad time or offset) or broken policies.
"""

import argparse
import json
import sys
from datetime import tzinfo
from pathlib import Path
from typing import Any

from engine.alerts import Alert, AlertStatus, fingerprint
from engine.cli.route import add_common, epoch_ms, load_policy_dir, local, start_time, table
from engine.errors import IngestError
from engine.ingest.alertmanager import parse_payload
from engine.policy.durations import format_duration_ms, parse_duration_ms
from engine.policy.models import PolicySet
from engine.policy.routing import route
from engine.simulate import Page, simulate

HELP = "dry run: every page an alert causes, to whom, on which channel, when"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alert", type=Path, required=True, help="webhook JSON or a label set JSON object")
    parser.add_argument("--ack-at", help="acknowledge this long after the trigger, e.g. 4m")
    parser.add_argument("--resolve-at", help="resolve this long after the trigger, e.g. 1h")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    try:
        at = start_time(args.at)
        start = epoch_ms(at)
        ack = _offset("--ack-at", args.ack_at)
        resolve = _offset("--resolve-at", args.resolve_at)
        alerts = read_alerts(args.alert, start)
    except ValueError as exc:
        print(f"escalation-engine simulate: {exc}", file=sys.stderr)
        return 2
    policies = load_policy_dir(args.policies)
    if policies is None:
        return 2
    pages = simulate(
        policies,
        alerts,
        start,
        ack_at_ms=None if ack is None else start + ack,
        resolve_at_ms=None if resolve is None else start + resolve,
    )
    zone = at.tzinfo
    if args.output == "json":
        doc = {
            "at": at.isoformat(),
            "ack_at": None if ack is None else local(start + ack, zone).isoformat(),
            "resolve_at": None if resolve is None else local(start + resolve, zone).isoformat(),
            "pages": [_page_doc(p, zone) for p in pages],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for line in _routing(alerts, policies):
        print(line)
    said = [f"triggered at {at.isoformat(sep=' ')}"]
    said += [
        f"{what} at +{format_duration_ms(ms)}" for what, ms in (("ack", ack), ("resolve", resolve)) if ms
    ]
    print("; ".join(said))
    if not pages:
        print("no notifications")
        return 0
    rows = [["OFFSET", "TIME", "LEVEL", "TARGET", "WHO", "CHANNEL", "ACTION", "NOTE"]]
    rows += [_row(p, zone) for p in pages]
    print("\n".join(table(rows)))
    return 0


def read_alerts(path: Path, start_ms: int) -> list[Alert]:
    """The alerts in FILE; ValueError (naming the file) when it is unreadable or neither format."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"--alert {path}: {exc}") from None
    if isinstance(raw, dict) and raw and all(isinstance(v, str) for v in raw.values()):
        return [Alert(fingerprint(raw), AlertStatus.FIRING, raw, start_ms)]
    try:
        return parse_payload(raw)[1]
    except IngestError as exc:
        raise ValueError(f"--alert {path}: neither a label set nor a webhook: {exc}") from None


def _offset(flag: str, text: str | None) -> int | None:
    try:
        return None if text is None else parse_duration_ms(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _routing(alerts: list[Alert], policies: PolicySet) -> list[str]:
    """One line per alert: where the rules send it (and why some open nothing)."""
    lines = []
    for a in alerts:
        name = f"{a.labels.get('alertname', 'alert')} ({a.fingerprint})"
        if a.status is AlertStatus.RESOLVED:
            lines.append(f"{name}: resolved, opens no incident")
            continue
        for r in route(policies, a.labels):
            if r.heartbeat_ms is not None:
                lines.append(f"{name}: heartbeat of rule {r.rule}, opens no incident")
            else:
                lines.append(f"{name}: rule {r.rule} -> {r.severity}, policy {r.policy}")
    return lines


def _row(p: Page, zone: tzinfo | None) -> list[str]:
    where = f"{p.channel}:{p.address}" if p.channel else ("-" if p.action == "held" else "nobody")
    return [
        f"+{format_duration_ms(p.offset_s * 1000)}",
        local(p.at_ms, zone).isoformat(sep=" ", timespec="minutes"),
        str(p.level) if p.level else "-",
        p.target or "-",
        p.user or "-",
        where,
        p.action,
        p.note,  # a hold's note says until when; JSON has it as held_until
    ]


def _page_doc(p: Page, zone: tzinfo | None) -> dict[str, Any]:
    held = None if p.held_until_ms is None else local(p.held_until_ms, zone).isoformat()
    return {
        "offset_s": p.offset_s,
        "at": local(p.at_ms, zone).isoformat(),
        "incident": p.incident_key,
        "level": p.level,
        "target": p.target,
        "user": p.user,
        "channel": p.channel,
        "address": p.address,
        "action": p.action,
        "note": p.note,
        "held_until": held,
    }
