"""`postmortem ID [-o FILE]`: the engine's post-mortem draft of an incident, in Markdown.

Printed to stdout, or written to FILE (`-o -` is stdout). Takes `--url` ($ESCALATION_URL, default
http://127.0.0.1:9095), `--token` ($ESCALATION_TOKEN) and `--timeout` (see engine/cli/client.py).

Exit codes: 0 ok; 1 the engine refused (4xx, e.g. an unknown incident; the engine's error is shown);
2 usage error, or FILE cannot be written; 3 cannot reach the engine, timeout or 5xx (the URL is shown).
"""

import argparse
import sys
import urllib.parse
from pathlib import Path

from engine.cli.client import Client, add_connection_arguments, client_from, run_api

HELP = "an incident's post-mortem draft (Markdown), from a running engine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the incident")
    parser.add_argument("-o", "--output", metavar="FILE", help="write it here instead of stdout")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_api("postmortem", lambda: _run(client_from(args), args))


def _run(client: Client, args: argparse.Namespace) -> int:
    path = f"/api/v1/incidents/{urllib.parse.quote(args.id, safe='')}/postmortem"
    text = client.get_text(path, accept="text/markdown")
    if not args.output or args.output == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    try:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        print(
            f"escalation-engine postmortem: cannot write {args.output}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {args.output} ({len(text.splitlines())} lines)", file=sys.stderr)
    return 0
