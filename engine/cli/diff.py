"""`diff OLD_DIR NEW_DIR [--exit-code] [--at TIME]`: how a policy change alters routing and paging.

Both policy sets route the same sample label sets (built from the rules of both) at instants
every 6 hours over a week from --at (default: the next Monday 00:00 UTC), and each ladder level
is resolved to whom it reaches then, so a rotation edit shows as well as a routing one.
A table for people; `-o json` for scripts, one document:
  {"old", "new", "at", "changes": [{"labels", "at", "field", "old", "new", "count"}]}
field is rule, severity, policy or "level N" (prefixed "lane NAME " for a `continue` lane);
"at" is the first sampled instant showing the change, "count" how many instants did; a missing
value is "(none)". Exit 0; 1 with --exit-code when anything changed; 2 on a usage error
(a missing directory, a bad time) or broken policies (file:line problems on stderr).
"""

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.cli.oncall import parse_time
from engine.cli.problems import load_or_report
from engine.cli.route import epoch_ms, local, table
from engine.policydiff import Change, diff

HELP = "how a policy change alters routing and paging"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", type=Path, help="the policy directory as it is")
    parser.add_argument("new", type=Path, help="the policy directory as proposed")
    parser.add_argument("--exit-code", action="store_true", help="exit 1 when behaviour changes")
    parser.add_argument("--at", help="start of the sampled week, RFC 3339 (default: next Monday 00:00Z)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace) -> int:
    try:
        at = parse_time(args.at) if args.at else next_monday(datetime.now(UTC))
    except ValueError as exc:
        print(f"escalation-engine diff: --at: {exc}", file=sys.stderr)
        return 2
    for path in (args.old, args.new):
        if not path.is_dir():
            print(f"escalation-engine diff: {path}: not a directory", file=sys.stderr)
            return 2
    old = load_or_report(args.old, "")
    new = load_or_report(args.new, "")
    if old is None or new is None:
        return 2
    changes = diff(old, new, epoch_ms(at))
    if args.output == "json":
        doc = {
            "old": str(args.old),
            "new": str(args.new),
            "at": at.isoformat(),
            "changes": [_doc(c, at) for c in changes],
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_table(changes, at)
    return 1 if changes and args.exit_code else 0


def next_monday(now: datetime) -> datetime:
    """The next Monday 00:00 UTC after `now`: a whole week from a fixed, readable start."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=7 - midnight.weekday())


def _doc(c: Change, at: datetime) -> dict[str, object]:
    return {
        "labels": c.labels,
        "at": local(c.at_ms, at.tzinfo).isoformat(),
        "field": c.field,
        "old": c.old,
        "new": c.new,
        "count": c.count,
    }


def _print_table(changes: list[Change], at: datetime) -> None:
    if not changes:
        print(f"no change in routing or paging (sampled the week from {at.isoformat()})")
        return
    rows = [["LABELS", "FIRST AT", "WHAT", "OLD -> NEW"]]
    for c in changes:
        labels = ",".join(f"{k}={v}" for k, v in c.labels.items()) or "(none)"
        when = local(c.at_ms, at.tzinfo).isoformat(sep=" ", timespec="minutes")
        seen = f" (x{c.count})" if c.count > 1 else ""
        rows.append([labels, when + seen, c.field, f"{c.old} -> {c.new}"])
    print("\n".join(table(rows)))
    print(f"\n{len(changes)} change(s), sampled every 6h over the week from {at.isoformat()}")
