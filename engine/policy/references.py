"""Cross-reference checks: every name a policy uses must refer to something defined."""

from typing import Any

from engine.policy.channels import CHANNEL_KINDS
from engine.policy.matchers import parse_matcher
from engine.policy.problems import dotted
from engine.policy.yamlpos import Loc, Pos, other


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


def _check(root: Pos, loc: Loc, name: object, what: str, defined: dict[Any, Any]) -> list[str]:
    """The problem when `name` at `loc` is text that `defined` lacks; other shapes are validation's."""
    if isinstance(name, str) and name not in defined:
        return [f"{root.find(loc).where}: {dotted(loc)}: {_undefined(what, name, defined)}"]
    return []


def cross_check(data: dict[str, Any], root: Pos) -> list[str]:
    """Names that must refer to something defined. Runs on raw data, so it reports even when
    validation failed elsewhere; shapes that are wrong are left to validation."""
    return _routes(data, root) + _targets(data, root) + _shadowed(data, root)


def _matcher_set(rule: object) -> frozenset[tuple[str, str, str]] | None:
    """A rule's matchers as (name, op, value); None when they do not parse (validation says why)."""
    texts = rule.get("matchers") if isinstance(rule, dict) else None
    if not isinstance(texts, list) or not texts:
        return None
    try:
        found = [parse_matcher(t) for t in texts if isinstance(t, str)]
    except ValueError:
        return None
    return frozenset((m.name, m.op, m.value) for m in found) if len(found) == len(texts) else None


def _shadowed(data: dict[str, Any], root: Pos) -> list[str]:
    """A rule that can never match: an earlier rule without `continue` asks for a subset of its
    matchers, so every alert it would take has already been taken."""
    problems: list[str] = []
    earlier: list[tuple[int, frozenset[tuple[str, str, str]]]] = []
    rules = _listed(data.get("rules"))
    for i, rule in rules:
        mine = _matcher_set(rule)
        if mine is None:
            continue
        for j, theirs in earlier:
            if theirs <= mine:
                where = root.find(["rules", i, "matchers"]).where
                first = other(root.find(["rules", j, "matchers"]).where, where)
                problems.append(
                    f"{where}: rules[{i}].matchers: this rule can never match: rules[{j}] ({first}) "
                    "already takes every alert it would, and does not `continue`"
                )
                break
        if isinstance(rule, dict) and not rule.get("continue"):
            earlier.append((i, mine))
    return problems


def _routes(data: dict[str, Any], root: Pos) -> list[str]:
    """Rules and the default route: their severity and policy, and unique rule names."""
    problems: list[str] = []
    severities, policies = _get(data, "severities"), _get(data, "escalation_policies")
    first_rule: dict[str, Loc] = {}
    routed: list[tuple[Loc, object]] = [
        (["default"], data.get("default")),
        (["heartbeat"], data.get("heartbeat")),
    ]
    routed += [(["rules", i], rule) for i, rule in _listed(data.get("rules"))]
    for loc, rule in routed:
        if not isinstance(rule, dict):
            continue
        problems += _check(root, [*loc, "severity"], rule.get("severity"), "severity", severities)
        problems += _check(root, [*loc, "policy"], rule.get("policy"), "escalation policy", policies)
        name = rule.get("name")
        if not isinstance(name, str) or loc == ["default"]:
            continue
        where = root.find([*loc, "name"]).where
        if name == "default":
            problems.append(f"{where}: {dotted(loc)}.name: 'default' is reserved for the default route")
        elif name in first_rule:
            first = other(root.find([*first_rule[name], "name"]).where, where)
            problems.append(f"{where}: {dotted(loc)}.name: rule {name!r} defined twice (also at {first})")
        first_rule.setdefault(name, loc)
    return problems


def _targets(data: dict[str, Any], root: Pos) -> list[str]:
    """`KIND:NAME` targets in escalation levels, and users' addresses on channels with named ones."""
    problems: list[str] = []
    users = _get(data, "users")
    # What each target kind names, and the names defined for it.
    schedules = _get(data, "schedules")
    references: dict[str, tuple[str, dict[Any, Any]]] = {
        "user": ("user", users),
        "schedule": ("schedule", schedules),
        "team": ("team", _get(data, "teams")),
    }
    for channel in CHANNEL_KINDS:
        if channel.named_as:
            names = _get(data, "channels", channel.name, channel.names_key)
            references[channel.name] = (channel.named_as, names)

    for policy, body in _get(data, "escalation_policies").items():
        for i, level in _listed(body.get("levels") if isinstance(body, dict) else None):
            for j, target in _listed(level.get("notify") if isinstance(level, dict) else None):
                kind, _, name = str(target).partition(":")
                if kind in references and name and not any(ch.isspace() for ch in name):
                    loc = ["escalation_policies", policy, "levels", i, "notify", j]
                    problems += _check(root, loc, name, *references[kind])
    problems += _schedules(schedules, users, references, root)
    problems += _calendars(data, root) + _teams(data, root) + _template_sets(data, root)
    for channel in CHANNEL_KINDS:
        if channel.user_field and channel.named_as:
            field = channel.user_field
            for user in users:
                loc = ["users", user, field]
                problems += _check(root, loc, _get(users, user).get(field), *references[channel.name])
    return problems


def _schedules(
    schedules: dict[Any, Any],
    users: dict[Any, Any],
    references: dict[str, tuple[str, dict[Any, Any]]],
    root: Pos,
) -> list[str]:
    """Everyone a schedule can put on call is a user; its fallback names something defined."""
    problems: list[str] = []
    for name, raw in schedules.items():
        body = raw if isinstance(raw, dict) else {}
        key = "rotations" if "rotations" in body else "layers"  # the model accepts either spelling
        for i, layer in _listed(body.get(key)):
            for j, user in _listed(layer.get("participants") if isinstance(layer, dict) else None):
                problems += _check(root, ["schedules", name, key, i, "participants", j], user, "user", users)
        for i, override in _listed(body.get("overrides")):
            user = override.get("user") if isinstance(override, dict) else None
            problems += _check(root, ["schedules", name, "overrides", i, "user"], user, "user", users)
        fallback = body.get("fallback")
        kind, _, target = str(fallback).partition(":")
        if isinstance(fallback, str) and kind in references and target:
            problems += _check(root, ["schedules", name, "fallback"], target, *references[kind])
    return problems


def _calendars(data: dict[str, Any], root: Pos) -> list[str]:
    """`during:` on levels and `business_hours_only:` on severities name a defined calendar."""
    problems: list[str] = []
    calendars = _get(data, "calendars")
    for name, severity in _get(data, "severities").items():
        if isinstance(severity, dict):
            loc = ["severities", name, "business_hours_only"]
            problems += _check(root, loc, severity.get("business_hours_only"), "calendar", calendars)
    for policy, body in _get(data, "escalation_policies").items():
        for i, level in _listed(body.get("levels") if isinstance(body, dict) else None):
            if isinstance(level, dict):
                loc = ["escalation_policies", policy, "levels", i, "during"]
                problems += _check(root, loc, level.get("during"), "calendar", calendars)
    return problems


def _teams(data: dict[str, Any], root: Pos) -> list[str]:
    problems: list[str] = []
    schedules, users = _get(data, "schedules"), _get(data, "users")
    for team, raw in _get(data, "teams").items():
        body = raw if isinstance(raw, dict) else {}
        problems += _check(root, ["teams", team, "schedule"], body.get("schedule"), "schedule", schedules)
        for i, user in _listed(body.get("members")):
            problems += _check(root, ["teams", team, "members", i], user, "user", users)
    return problems


def _template_sets(data: dict[str, Any], root: Pos) -> list[str]:
    """Rules and policies pick a set of `templates:` by name."""
    problems: list[str] = []
    templates = _get(data, "templates")
    picks: list[tuple[Loc, object]] = [
        (["rules", i, "templates"], rule) for i, rule in _listed(data.get("rules"))
    ]
    picks += [
        (["escalation_policies", name, "templates"], body)
        for name, body in _get(data, "escalation_policies").items()
    ]
    for loc, body in picks:
        if isinstance(body, dict):
            problems += _check(root, loc, body.get("templates"), "template set", templates)
    return problems
