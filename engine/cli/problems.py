"""Printing policy problems the same way for every verb that loads policies."""

import sys
from pathlib import Path

from engine.errors import PolicyError
from engine.policy.loader import load_policies
from engine.policy.models import PolicySet


def load_or_report(path: Path, refusal: str) -> PolicySet | None:
    """The policy set at `path`, or None after printing each problem and `refusal` to stderr."""
    try:
        return load_policies(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{refusal}{len(exc.problems)} error(s) in {path}", file=sys.stderr)
        return None
