"""`oncall SCHEDULE [--at TIME] [--next N]`: who is on call, and the next hand-offs.

A table for people, `-o json` for scripts: {"schedule", "at", "oncall": [...], "next": [{"at", "oncall"}]}.
Exit 0; 2 on a usage error (an unknown schedule, a bad time) or broken policies.
"""

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.cli.problems import load_or_report
from engine.policy.schedules import handoffs, oncall

HELP = "who is on call on a schedule, and the next hand-offs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("schedule")
    parser.add_argument("--at", help="RFC 3339 time, e.g. 2027-03-29T06:59:00Z (default: now)")
    parser.add_argument("--next", type=int, default=5, help="how many hand-offs to show (default 5)")
    parser.add_argument(
        "--policies", type=Path, help="policy directory (default $ESCALATION_POLICIES or ./policies)"
    )
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace) -> int:
    path = args.policies or Path(os.environ.get("ESCALATION_POLICIES", "policies"))
    policies = load_or_report(path, "")
    if policies is None:
        return 2
    schedule = policies.schedules.get(args.schedule)
    if schedule is None:
        names = ", ".join(policies.schedules) or "none"
        print(f"escalation-engine oncall: no schedule {args.schedule!r} (defined: {names})", file=sys.stderr)
        return 2
    try:
        at = parse_time(args.at) if args.at else datetime.now(UTC)
    except ValueError as exc:
        print(f"escalation-engine oncall: --at: {exc}", file=sys.stderr)
        return 2
    at = at.astimezone(schedule.zone)
    now = oncall(schedule, at)
    upcoming = handoffs(schedule, at, max(args.next, 0))
    if args.output == "json":
        doc = {
            "schedule": args.schedule,
            "at": at.isoformat(),
            "oncall": now,
            "next": [{"at": when.isoformat(), "oncall": who} for when, who in upcoming],
        }
        print(json.dumps(doc, indent=2))
        return 0
    stamp = at.isoformat(sep=" ", timespec="minutes")
    print(f"{args.schedule} ({schedule.time_zone}) at {stamp}: {_names(now)}")
    for when, who in upcoming:
        print(f"  from {when.isoformat(sep=' ', timespec='minutes')}  {_names(who)}")
    return 0


def parse_time(text: str) -> datetime:
    """RFC 3339 with its offset (Z or +hh:mm); a time without one is refused, not guessed."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no offset; write it as 2027-03-29T06:59:00Z or with +02:00")
    return at


def _names(users: list[str]) -> str:
    return ", ".join(users) if users else "nobody (the schedule's fallback is paged)"
