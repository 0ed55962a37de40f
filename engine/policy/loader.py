"""Load policy YAML: read every file, merge, validate, cross-check, and report every problem as file:line.

A policy directory holds any number of `*.yaml`/`*.yml` files (subdirectories such as `tests/`
are not read). Named maps (`severities`, `escalation_policies`, `users`) merge across files and a
name defined twice is an error; `rules` lists concatenate in file-name order; `channels` merges
per channel; any other section is defined once.

This module owns loading and merging; reading with positions is in `yamlpos`, the wording of
validation errors in `problems`, and the checks that names refer to something in `references`.
"""

import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import PolicyError
from engine.policy.models import PolicySet
from engine.policy.problems import describe, model_of
from engine.policy.references import cross_check
from engine.policy.yamlpos import Pos, Unreadable, other, read_yaml

_SUFFIXES = (".yaml", ".yml")


def load_policies(path: str | Path) -> PolicySet:
    """Load a policy directory (or one file); PolicyError lists every problem found."""
    policies, problems = _load(Path(path))
    if policies is None or problems:
        raise PolicyError(problems)
    return policies


def check_policies(path: str | Path) -> list[str]:
    """Every problem in a policy directory (or file) as `file:line: message`; empty when valid."""
    return _load(Path(path))[1]


def _load(path: Path) -> tuple[PolicySet | None, list[str]]:
    if path.is_dir():
        # Dotfiles are editor swap and lock files; subdirectories (policy tests) are not policies.
        files = sorted(p for p in path.glob("[!.]*") if p.is_file() and p.suffix in _SUFFIXES)
        if not files:
            return None, [f"{path}: no policy files (*.yaml, *.yml) in this directory"]
        root = Pos(str(path))
    elif path.is_file():
        files, root = [path], Pos(f"{path}:1")
    else:
        return None, [f"{path}: no such file or directory"]

    problems: list[str] = []
    merged: dict[str, Any] = {}
    complete = True  # every file parsed
    for file in files:
        try:
            read = read_yaml(file, problems)
        except Unreadable as exc:
            problems.append(str(exc))
            complete = False
            continue
        if read is not None:
            _merge(merged, root, *read, problems)

    policies = None
    try:
        policies = PolicySet.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            # A file that did not parse would make its sections look missing: say only what is sure.
            if complete or len(err["loc"]) > 1 or err["type"] != "missing":
                problems.append(describe(err["loc"], err["type"], err["msg"], err["input"], root))
    if complete:
        problems.extend(cross_check(merged, root))
    return policies, sorted(dict.fromkeys(problems), key=_order)


def _order(problem: str) -> tuple[str, int, str]:
    file, _, rest = problem.partition(":")
    line, _, message = rest.partition(":")
    return (file, int(line), message) if line.isdigit() else (file, 0, rest)


# --- merging files ---------------------------------------------------------------------------


def _section_kind(section: str) -> str:
    """How a top-level section merges, from its type in PolicySet: map, list, per-key or once."""
    info = PolicySet.model_fields.get(section)
    if info is None:
        return "once"  # unknown: validation reports it
    origin = typing.get_origin(info.annotation)
    if origin is dict:
        return "map"
    if origin is list:
        return "list"
    model = model_of(info.annotation)
    if model is not None and not any(f.is_required() for f in model.model_fields.values()):
        return "per-key"  # like channels: each channel in any file, once
    return "once"


def _merge(merged: dict[str, Any], root: Pos, data: object, pos: Pos, problems: list[str]) -> None:
    if not isinstance(data, dict):
        problems.append(
            f"{pos.where}: expected a mapping of sections (severities, rules, ...), got {_kind(data)}"
        )
        return
    for section, value in data.items():
        section_pos = pos.children.get(str(section), pos)
        kind = _section_kind(str(section))
        if kind == "once":
            _put(merged, root, str(section), value, section_pos, str(section), problems)
        elif kind == "list":
            if not isinstance(value, list):
                problems.append(f"{section_pos.where}: {section}: expected a list, got {_kind(value)}")
                continue
            items = merged.setdefault(section, [])
            into = root.children.setdefault(str(section), Pos(section_pos.where))
            for i, item in enumerate(value):
                into.children[str(len(items))] = section_pos.children.get(str(i), section_pos)
                items.append(item)
        elif not isinstance(value, dict):
            problems.append(
                f"{section_pos.where}: {section}: expected a mapping of names, got {_kind(value)}"
            )
        else:
            target = merged.setdefault(section, {})
            into = root.children.setdefault(str(section), Pos(section_pos.where))
            for name, item in value.items():
                item_pos = section_pos.children.get(str(name), section_pos)
                _put(target, into, name, item, item_pos, f"{section}.{name}", problems)


def _put(
    target: dict[Any, Any], into: Pos, key: Any, value: object, pos: Pos, path: str, problems: list[str]
) -> None:
    if key in target:
        first = other(into.children[str(key)].where, pos.where)
        problems.append(f"{pos.where}: {path}: defined twice (also at {first})")
        return
    target[key] = value
    into.children[str(key)] = pos


def _kind(value: object) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
