"""`route --labels k=v,... [--at TIME]`: the rule, severity and policy a label set gets, and its ladder.

Each level's targets are resolved at `at + after`, so a hand-off during the ladder shows.
A table for people; `-o json` for scripts, one document:
  {"labels", "at", "rule", "severity", "policy", "lane", "heartbeat_s", "until", "ack_timeout_s",
   "repeat", "repeat_after_s",
   "levels": [{"after_s", "at", "targets", "people",
               "reaches": [{"target", "user", "channel", "address", "note"}]}]}
With several routes (each matching `continue: true` rule opens its own lane, lane = its name;
the terminal route has lane ""): {"labels", "at", "routes": [{"rule", ... as above}]}.
A heartbeat route (`heartbeat_s` not null) opens no incident: its ladder is what pages when the
heartbeat falls silent. Exit 0; 2 on a usage error (a pair without '=', a bad time) or broken policies.
"""

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from engine.cli.oncall import parse_time
from engine.cli.problems import load_or_report
from engine.policy.durations import format_duration_ms
from engine.policy.models import PolicySet
from engine.policy.routing import Route, route
from engine.simulate import reach

HELP = "which rule, severity and policy labels get, and who each level pages"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, help="k=v,k2=v2 (a value may contain '=', not ',')")
    add_common(parser)


def add_common(parser: argparse.ArgumentParser) -> None:
    """--at, --policies and -o, as every policy verb spells them."""
    parser.add_argument("--at", help="RFC 3339 time, e.g. 2027-03-29T06:59:00Z (default: now)")
    parser.add_argument(
        "--policies", type=Path, help="policy directory (default $ESCALATION_POLICIES or ./policies)"
    )
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace) -> int:
    try:
        labels = parse_labels(args.labels)
        at = start_time(args.at)
    except ValueError as exc:
        print(f"escalation-engine route: {exc}", file=sys.stderr)
        return 2
    policies = load_policy_dir(args.policies)
    if policies is None:
        return 2
    docs = [_route_doc(r, policies, at) for r in route(policies, labels)]
    if args.output == "json":
        head = {"labels": labels, "at": at.isoformat()}
        doc = {**head, **docs[0]} if len(docs) == 1 else {**head, "routes": docs}
        print(json.dumps(doc, indent=2))
        return 0
    print("labels: " + (",".join(f"{k}={v}" for k, v in labels.items()) or "(none)"))
    for r in docs:
        print()
        print(_headline(r, policies))
        rows = [["AFTER", "AT", "TARGET", "WHO", "CHANNEL", "NOTE"]]
        for level in r["levels"]:
            when = datetime.fromisoformat(level["at"]).isoformat(sep=" ", timespec="minutes")
            after = format_duration_ms(level["after_s"] * 1000)
            for x in level["reaches"]:
                where = f"{x['channel']}:{x['address']}" if x["channel"] else "nobody"
                rows.append([after, when, x["target"], x["user"] or "-", where, x["note"]])
        print("\n".join("  " + line for line in table(rows)))
    return 0


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2`; a value may hold '=' (split at the first); a pair without one is refused."""
    labels: dict[str, str] = {}
    for pair in text.split(",") if text else []:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--labels: {pair!r} is not name=value")
        labels[name.strip()] = value
    return labels


def start_time(text: str | None) -> datetime:
    """--at, or now (to the second: nobody reads milliseconds in a dry run)."""
    return parse_time(text) if text else datetime.now(UTC).replace(microsecond=0)


def load_policy_dir(path: Path | None) -> PolicySet | None:
    return load_or_report(path or Path(os.environ.get("ESCALATION_POLICIES", "policies")), "")


def epoch_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def local(ms: int, zone: tzinfo | None) -> datetime:
    """An instant in the zone (or offset) the user gave --at in."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone)


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _route_doc(r: Route, policies: PolicySet, at: datetime) -> dict[str, Any]:
    policy = policies.escalation_policies[r.policy]
    start = epoch_ms(at)
    levels = []
    for level in policy.levels:
        when = start + level.after
        reaches = [x for t in level.notify for x in reach(t, policies, when)]
        levels.append(
            {
                "after_s": level.after // 1000,
                "at": local(when, at.tzinfo).isoformat(),
                "targets": list(level.notify),
                "people": list(dict.fromkeys(x.user for x in reaches if x.user)),
                "reaches": [
                    {
                        "target": x.target,
                        "user": x.user,
                        "channel": x.channel,
                        "address": x.address,
                        "note": x.note,
                    }
                    for x in reaches
                ],
            }
        )
    return {
        "rule": r.rule,
        "severity": r.severity,
        "policy": r.policy,
        "lane": r.lane,
        "heartbeat_s": r.heartbeat_ms // 1000 if r.heartbeat_ms is not None else None,
        "until": policy.until,
        "ack_timeout_s": policy.ack_timeout // 1000 if policy.ack_timeout else None,
        "repeat": policy.repeat,
        "repeat_after_s": policy.repeat_after // 1000,
        "levels": levels,
    }


def _headline(r: dict[str, Any], policies: PolicySet) -> str:
    desc = policies.severities[r["severity"]].description if r["severity"] in policies.severities else ""
    severity = f"{r['severity']} ({desc})" if desc else r["severity"]
    how = [f"until {r['until']}"]
    if r["ack_timeout_s"]:
        how.append(f"ack timeout {format_duration_ms(r['ack_timeout_s'] * 1000)}")
    if r["repeat"]:
        how.append(f"repeat {r['repeat']}x after {format_duration_ms(r['repeat_after_s'] * 1000)}")
    ladder = f"policy {r['policy']} ({', '.join(how)})"
    lane = f" [lane {r['lane']}: continue]" if r["lane"] else ""
    if r["heartbeat_s"] is None:
        return f"rule {r['rule']}{lane}: {severity}, {ladder}"
    every = format_duration_ms(r["heartbeat_s"] * 1000)
    return (
        f"rule {r['rule']}{lane}: heartbeat, opens no incident; silent for {every}, "
        f"'alerting pipeline silent' opens as {severity}, {ladder}"
    )
