"""Load policy YAML: read every file, merge, validate, cross-check, and report every problem as file:line.

A policy directory holds any number of `*.yaml`/`*.yml` files (subdirectories such as `tests/`
are not read). Named maps (`severities`, `escalation_policies`, `users`) merge across files and a
name defined twice is an error; `rules` lists concatenate in file-name order; `channels` merges
per channel; any other section is defined once.
"""

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from engine.errors import PolicyError
from engine.policy.models import PolicySet

_SUFFIXES = (".yaml", ".yml")
Loc = Sequence[int | str]


@dataclass
class _Pos:
    """Where a value was written (`file:line`), and the same for its keys or list items."""

    where: str
    children: dict[str, "_Pos"] = field(default_factory=dict)

    def find(self, loc: Loc) -> "_Pos":
        """The deepest position along `loc` (a missing key points at its parent)."""
        pos = self
        for part in loc:
            child = pos.children.get(str(part))
            if child is None:
                break
            pos = child
        return pos


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
        root = _Pos(str(path))
    elif path.is_file():
        files, root = [path], _Pos(f"{path}:1")
    else:
        return None, [f"{path}: no such file or directory"]

    problems: list[str] = []
    merged: dict[str, Any] = {}
    complete = True  # every file parsed
    for file in files:
        try:
            read = _read(file, problems)
        except _Unreadable as exc:
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
                problems.append(_describe(err["loc"], err["type"], err["msg"], err["input"], root))
    if complete:
        problems.extend(_cross_check(merged, root))
    return policies, sorted(dict.fromkeys(problems), key=_order)


def _order(problem: str) -> tuple[str, int, str]:
    file, _, rest = problem.partition(":")
    line, _, message = rest.partition(":")
    return (file, int(line), message) if line.isdigit() else (file, 0, rest)


# --- reading YAML with positions -------------------------------------------------------------


class _Unreadable(Exception):
    """A file that cannot be read or parsed; its message is the problem line."""


def _read(file: Path, problems: list[str]) -> tuple[object, _Pos] | None:
    """The file's data and positions; None when it is empty. Duplicate keys go to `problems`."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"{file}: cannot read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None  # empty, or only comments
        # Positions come from the composed nodes, before construction rewrites `<<` merge keys.
        pos = _positions(node, str(file), "", problems, set())
        return loader.construct_document(node), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = (
            f"{exc.context} at line {exc.context_mark.line + 1}: " if exc.context and exc.context_mark else ""
        )
        line = mark.line + 1 if mark else 1
        raise _Unreadable(f"{file}:{line}: YAML syntax error: {context}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise _Unreadable(f"{file}:1: YAML error: {exc}") from None
    finally:
        loader.dispose()


def _positions(node: yaml.Node, file: str, path: str, problems: list[str], seen: set[int]) -> _Pos:
    pos = _Pos(f"{file}:{node.start_mark.line + 1}")
    if id(node) in seen:  # a recursive alias; the constructor reports it if it matters
        return pos
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            child = _positions(value, file, _join(path, name), problems, seen)
            child.where = f"{file}:{key.start_mark.line + 1}"  # the key's line is where one looks
            if name in pos.children and name != "<<":
                first = _other(pos.children[name].where, child.where)
                problems.append(f"{child.where}: {_join(path, name)}: duplicate key (first at {first})")
            pos.children.setdefault(name, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            pos.children[str(i)] = _positions(item, file, f"{path}[{i}]", problems, seen)
    return pos


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
    model = _model_of(info.annotation)
    if model is not None and not any(f.is_required() for f in model.model_fields.values()):
        return "per-key"  # like channels: each channel in any file, once
    return "once"


def _merge(merged: dict[str, Any], root: _Pos, data: object, pos: _Pos, problems: list[str]) -> None:
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
            into = root.children.setdefault(str(section), _Pos(section_pos.where))
            for i, item in enumerate(value):
                into.children[str(len(items))] = section_pos.children.get(str(i), section_pos)
                items.append(item)
        elif not isinstance(value, dict):
            problems.append(
                f"{section_pos.where}: {section}: expected a mapping of names, got {_kind(value)}"
            )
        else:
            target = merged.setdefault(section, {})
            into = root.children.setdefault(str(section), _Pos(section_pos.where))
            for name, item in value.items():
                item_pos = section_pos.children.get(str(name), section_pos)
                _put(target, into, name, item, item_pos, f"{section}.{name}", problems)


def _put(
    target: dict[Any, Any], into: _Pos, key: Any, value: object, pos: _Pos, path: str, problems: list[str]
) -> None:
    if key in target:
        first = _other(into.children[str(key)].where, pos.where)
        problems.append(f"{pos.where}: {path}: defined twice (also at {first})")
        return
    target[key] = value
    into.children[str(key)] = pos


def _other(where: str, here: str) -> str:
    """`where` for a message about `here`: just the line when both are in one file."""
    file, _, line = where.rpartition(":")
    return f"line {line}" if file == here.rpartition(":")[0] else where


def _kind(value: object) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


# --- describing validation errors --------------------------------------------------------------


def _join(path: str, part: int | str) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out = _join(out, part)
    return out


def _describe(loc: Loc, kind: str, msg: str, value: object, root: _Pos) -> str:
    loc = list(loc)
    if loc and loc[-1] == "[key]":  # a map key that is not text, such as `1:`
        loc, msg = loc[:-1], "names must be text"
    if kind == "missing":
        where, path = root.find(loc[:-1]).where, _dotted(loc[:-1])
        noun = "key" if path else "section"
        return f"{where}: {path + ': ' if path else ''}missing required {noun} {loc[-1]!r}"
    if kind == "extra_forbidden":  # named in the message, so the path stops at its parent
        noun = "key" if len(loc) > 1 else "section"
        msg = f"unknown {noun} {loc[-1]!r}{_suggest(str(loc[-1]), _allowed_keys(loc[:-1]))}"
        return f"{root.find(loc).where}: {_dotted(loc[:-1]) + ': ' if len(loc) > 1 else ''}{msg}"
    if kind.startswith(("value_error", "assertion_error")):
        msg = msg.split(", ", 1)[-1]  # drop pydantic's "Value error, " prefix
    elif kind == "too_short":
        msg = "must not be empty"
    elif isinstance(value, str | int | float | bool):
        msg = f"{msg}, got {value!r}"
    where = root.find(loc).where
    return f"{where}: {_dotted(loc)}: {msg}" if loc else f"{where}: {msg}"


def _suggest(word: str, allowed: list[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(word, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(allowed)}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The policy model an annotation stands for, looking through `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for m in map(_model_of, typing.get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts, for a "did you mean" on an unknown key."""
    annotation: Any = PolicySet
    for part in loc:
        model = _model_of(annotation)
        if model is not None:
            fields = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
            annotation = fields.get(str(part))
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    model = _model_of(annotation)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items() if not f.exclude]


# --- cross-references ----------------------------------------------------------------------------


def _get(data: object, *keys: str) -> dict[Any, Any]:
    """A nested mapping from the raw merged data, or {} where it is absent or malformed."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _listed(data: object) -> list[tuple[int, Any]]:
    return list(enumerate(data)) if isinstance(data, list) else []


def _undefined(what: str, name: str, defined: dict[Any, Any]) -> str:
    names = ", ".join(map(str, defined)) or "none"
    return f"undefined {what} {name!r} (defined: {names})"


def _cross_check(data: dict[str, Any], root: _Pos) -> list[str]:
    """Names that must refer to something defined. Runs on raw data, so it reports even when
    validation failed elsewhere; shapes that are wrong are left to validation."""
    problems: list[str] = []
    severities, policies = _get(data, "severities"), _get(data, "escalation_policies")
    users = _get(data, "users")
    references = {
        "user": ("user", users),
        "pagerduty": ("pagerduty service", _get(data, "channels", "pagerduty", "services")),
        "webhook": ("webhook endpoint", _get(data, "channels", "webhook", "endpoints")),
    }

    def check(loc: Loc, name: object, what: str, defined: dict[Any, Any]) -> None:
        if isinstance(name, str) and name not in defined:
            problems.append(f"{root.find(loc).where}: {_dotted(loc)}: {_undefined(what, name, defined)}")

    first_rule: dict[str, Loc] = {}
    routed: list[tuple[Loc, object]] = [(["default"], data.get("default"))]
    routed += [(["rules", i], rule) for i, rule in _listed(data.get("rules"))]
    for loc, rule in routed:
        if not isinstance(rule, dict):
            continue
        check([*loc, "severity"], rule.get("severity"), "severity", severities)
        check([*loc, "policy"], rule.get("policy"), "escalation policy", policies)
        name = rule.get("name")
        if not isinstance(name, str) or loc == ["default"]:
            continue
        where = root.find([*loc, "name"]).where
        if name == "default":
            problems.append(f"{where}: {_dotted(loc)}.name: 'default' is reserved for the default route")
        elif name in first_rule:
            first = _other(root.find([*first_rule[name], "name"]).where, where)
            problems.append(f"{where}: {_dotted(loc)}.name: rule {name!r} defined twice (also at {first})")
        first_rule.setdefault(name, loc)

    for policy, body in policies.items():
        for i, level in _listed(body.get("levels") if isinstance(body, dict) else None):
            for j, target in _listed(level.get("notify") if isinstance(level, dict) else None):
                kind, _, name = str(target).partition(":")
                if kind in references and name and not any(ch.isspace() for ch in name):
                    loc = ["escalation_policies", policy, "levels", i, "notify", j]
                    check(loc, name, *references[kind])
    for user in users:
        check(["users", user, "pagerduty"], _get(users, user).get("pagerduty"), *references["pagerduty"])
    return problems
