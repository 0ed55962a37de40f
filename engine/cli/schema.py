"""`schema`: the JSON Schema of the policy files, generated from the models that validate them.

Point an editor at it (yaml-language-server): save it as policy.schema.json and start each
policy file with `# yaml-language-server: $schema=./policy.schema.json`.
"""

import argparse
import json

from engine.policy.models import PolicySet

HELP = "print the JSON Schema of the policy files (for editors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")


def run(args: argparse.Namespace) -> int:
    schema = PolicySet.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "escalation-engine policy file"
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        print(text, end="")
    return 0
