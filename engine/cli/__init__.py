"""escalation-engine: the argument parser; each verb is one module in this package (see VERBS)."""

import argparse
import os
import sys
from types import ModuleType

from engine import __version__
from engine.cli import (
    check,
    diff,
    export,
    importer,
    incidents,
    oncall,
    policytests,
    postmortem,
    report,
    route,
    schema,
    serve,
    simulate,
    worker,
)

# a verb module has HELP, add_arguments(parser) and run(args) -> exit code
VERBS: dict[str, ModuleType] = {
    "serve": serve,
    "check": check,
    "oncall": oncall,
    "schema": schema,
    "route": route,
    "simulate": simulate,
    "test": policytests,
    "diff": diff,
    "incidents": incidents,
    "postmortem": postmortem,
    "report": report,
    "export": export,
    "import": importer,
    "worker": worker,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="escalation-engine", description="Alertmanager in, escalating pages out."
    )
    parser.add_argument("--version", action="version", version=f"escalation-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, verb in VERBS.items():
        verb.add_arguments(sub.add_parser(name, help=verb.HELP))
    args = parser.parse_args(argv)
    try:
        code: int = VERBS[args.command].run(args)
    except BrokenPipeError:  # `... | head` closed our stdout: not an error, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
