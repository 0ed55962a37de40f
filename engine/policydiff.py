"""What a policy change does to behaviour: routing and paging compared on sample alerts. Pure.

Text diffs miss what matters (a moved rule, a rotation edit, a renamed user in a ladder), so both
policy sets are run on the same label sets at the same instants and their outcomes compared.
The label sets come from the rules of both sets: one satisfying each rule, and variants with one
matcher broken, so a rule's edge shows too; `{}` stands for the default route.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.policy.durations import format_duration_ms
from engine.policy.matchers import Matcher
from engine.policy.models import PolicySet, Rule
from engine.policy.routing import Route, route
from engine.simulate import reach

SAMPLE_EVERY_MS = 6 * 3_600_000
SAMPLE_SPAN_MS = 7 * 86_400_000
NONE = "(none)"
# a regex alternative we can turn into a value: a literal, or a literal prefix followed by `.*`
_LITERAL = re.compile(r"([A-Za-z0-9_\-. /:@]*)(\.\*)?")

Labels = dict[str, str]


@dataclass(slots=True)
class Change:
    """One behaviour that differs; `count` is how many sampled instants showed it (first at `at_ms`)."""

    labels: Labels
    at_ms: int
    field: str  # rule, severity, policy, "level N"; prefixed "lane NAME " for a `continue` lane
    old: str
    new: str
    count: int = 1


def diff(old: PolicySet, new: PolicySet, start_ms: int) -> list[Change]:
    """Every difference between `old` and `new` on the corpus, over a week sampled from `start_ms`."""
    found: dict[tuple[tuple[tuple[str, str], ...], str, str, str], Change] = {}
    for labels in corpus(old, new):
        for at in range(start_ms, start_ms + SAMPLE_SPAN_MS, SAMPLE_EVERY_MS):
            before, after = behaviour(old, labels, at), behaviour(new, labels, at)
            for field in dict.fromkeys([*before, *after]):  # ordered union of fields
                was, now = before.get(field, NONE), after.get(field, NONE)
                if was == now:
                    continue
                key = (tuple(sorted(labels.items())), field, was, now)
                if key in found:
                    found[key].count += 1
                else:
                    found[key] = Change(dict(labels), at, field, was, now)
    return list(found.values())


def corpus(*sets: PolicySet) -> list[Labels]:
    """Label sets exercising every rule of every set, deduplicated, in rule order; `{}` last."""
    seen: dict[tuple[tuple[str, str], ...], Labels] = {}
    for policies in sets:
        for rule in policies.rules:
            for labels in _for_rule(rule):
                seen.setdefault(tuple(sorted(labels.items())), labels)
    seen.setdefault((), {})
    return list(seen.values())


def behaviour(policies: PolicySet, labels: Labels, at_ms: int) -> dict[str, str]:
    """What people see for `labels` at `at_ms`: per route its rule, severity, policy and ladder."""
    out: dict[str, str] = {}
    for r in route(policies, labels):
        prefix = f"lane {r.lane} " if r.lane else ""
        out[prefix + "rule"] = r.rule
        out[prefix + "severity"] = r.severity
        out[prefix + "policy"] = r.policy
        for n, text in enumerate(_ladder(policies, r, at_ms), 1):
            out[f"{prefix}level {n}"] = text
    return out


def _ladder(policies: PolicySet, r: Route, at_ms: int) -> list[str]:
    """Each level as `after 15m: alice, pagerduty:platform`, targets resolved when the level pages."""
    levels = []
    for level in policies.escalation_policies[r.policy].levels:
        who = [
            x.user or (f"{x.channel}:{x.address}" if x.channel else f"nobody ({x.target})")
            for t in level.notify
            for x in reach(t, policies, at_ms + level.after)
        ]
        when = f" during {level.during}" if level.during else ""
        levels.append(f"after {format_duration_ms(level.after)}{when}: {', '.join(dict.fromkeys(who))}")
    return levels


def _for_rule(rule: Rule) -> Iterable[Labels]:
    """A label set matching `rule` (one per regex alternative), then each with one matcher broken."""
    choices: list[tuple[Matcher, list[str]]] = []
    for m in rule.parsed:
        values = _values(m)
        if values is None:
            return  # a regex we cannot invert: this rule gets no samples of its own
        choices.append((m, values))
    base = {m.name: vs[0] for m, vs in choices if vs}
    variants = [base]
    for m, vs in choices:
        variants += [{**base, m.name: v} for v in vs[1:]]  # the other alternatives of a regex
        if m.op in ("=", "=~"):
            variants.append({k: v for k, v in base.items() if k != m.name})  # label left out
        else:
            variants.append({**base, m.name: m.value})  # `!=`: the excluded value
    for labels in variants:
        if labels is base and not rule.matches(labels):
            return  # contradictory matchers: nothing matches this rule
        yield labels


def _values(m: Matcher) -> list[str] | None:
    """Values that satisfy `m`, [] when leaving the label out does, None when we cannot tell."""
    if m.op == "=":
        return [m.value] if m.value else []
    if m.op in ("!=", "!~"):
        return [] if m.matches({}) else None
    values = []
    for alt in m.value.split("|"):
        literal = _LITERAL.fullmatch(alt)
        if literal is None:
            return None
        values.append(literal.group(1))
    return [v for v in dict.fromkeys(values) if m.matches({m.name: v})] or None
