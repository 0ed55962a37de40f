"""`check DIR`: validate policies; one `file:line: message` per problem, exit 1 on any."""

import argparse
from pathlib import Path

from engine.cli.problems import load_or_report

HELP = "validate policies; prints file:line: message per error"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path)


def run(args: argparse.Namespace) -> int:
    policies = load_or_report(args.dir, "")
    if policies is None:
        return 1
    print(f"{args.dir}: OK: {policies.summary()}")
    return 0
