"""`test DIR_OR_FILES... [--policies DIR]`: policy unit tests, in the spirit of `promtool test rules`.

Each test file is `tests: [...]` (see engine/policytests.py). One line per test: `ok  NAME`, or
`FAIL file:line NAME` followed by what was expected and what the policies gave; then a summary.
Exit 0 when all pass, 1 when any fails, 2 on a bad test file (file:line: problem) or bad policies.
"""

import argparse
import sys
from pathlib import Path

from engine.cli.route import load_policy_dir
from engine.policytests import TestFileError, load_cases, run_case, test_files

HELP = "policy unit tests: routing and pages for given alerts (like promtool test rules)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="DIR_OR_FILES", help="test files or directories"
    )
    parser.add_argument(
        "--policies", type=Path, help="policy directory (default $ESCALATION_POLICIES or ./policies)"
    )


def run(args: argparse.Namespace) -> int:
    files = test_files(args.paths)
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        what = ", ".join(map(str, missing)) if missing else "no *.yaml test files"
        print(f"escalation-engine test: {what}: not found", file=sys.stderr)
        return 2
    try:
        cases = load_cases(files)
    except TestFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"escalation-engine test: {len(exc.problems)} error(s) in the test files", file=sys.stderr)
        return 2
    policies = load_policy_dir(args.policies)
    if policies is None:
        return 2
    failed = 0
    for case in cases:
        result = run_case(policies, case)
        if result.ok:
            print(f"ok    {case.name}")
            continue
        failed += 1
        print(f"FAIL  {case.where} {case.name}")
        for line in result.diff:
            print(f"      {line}")
    print(f"{len(cases) - failed} passed, {failed} failed, {len(cases)} test(s) in {len(files)} file(s)")
    return 1 if failed else 0
