"""A policy target -> the people and channel addresses it reaches at a time. Pure: no I/O, no clock.

`schedule:NAME` is resolved at send time: a page held overnight goes to the morning's on-call.
An empty slot goes to the schedule's `fallback`, and the resolution says so for the timeline.
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.policy.channels import CHANNEL_KINDS, CHANNELS
from engine.policy.models import PolicySet, User
from engine.policy.schedules import oncall
from engine.times import rfc3339

MAX_FALLBACKS = 3  # schedule -> fallback schedule -> ...: a loop in the files must end somewhere

# a user's contact methods (User field, channel), in the order of the User model's fields
_CONTACTS = sorted(
    ((kind.user_field, kind.name) for kind in CHANNEL_KINDS if kind.user_field),
    key=lambda pair: list(User.model_fields).index(pair[0]),
)


class Address(NamedTuple):
    channel: str  # a channel kind: email, pagerduty, webhook, slack
    name: str  # channel-specific: an email address, a PagerDuty service, a webhook endpoint
    person: str = ""  # the user reached through it ("" for a channel target): whom failover tries


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: list[Address] = field(default_factory=list)
    people: list[str] = field(default_factory=list)  # users reached, by name
    note: str = ""  # what the timeline should know: nobody on call, a fallback paged
    why_empty: str = ""  # why nobody is reached ("" when someone is)
    later: list[tuple[int, Address]] = field(default_factory=list)  # people's own later steps: (after_ms, to)


def resolve_target(target: str, policies: PolicySet, at_ms: int | None = None, depth: int = 0) -> Resolution:
    """Who `target` reaches at `at_ms` (schedules need a time; without one they reach nobody)."""
    kind, _, name = target.partition(":")
    if kind in CHANNELS:
        return Resolution([Address(kind, name)])
    if kind == "user":
        user = policies.users.get(name)
        if user is None:
            return Resolution(why_empty=f"{target}: no such user")
        now, later = _steps(user, name)
        return Resolution(now, [name], why_empty="" if now or later else _no_contact(target), later=later)
    if kind == "schedule":
        return _schedule(target, name, policies, at_ms, depth)
    if kind == "team":
        return _team(target, name, policies, at_ms, depth)
    return Resolution(why_empty=f"{target}: {kind} targets cannot be delivered by this release yet")


def reachable(target: str, addresses: list[Address], channels: Collection[str]) -> list[Address]:
    """A person is reached through the channels this engine has; the others are not errors."""
    if target.partition(":")[0] in CHANNELS:
        return addresses
    return [a for a in addresses if a.channel in channels]


def user_by_contact(policies: PolicySet, channel: str, address: str) -> str | None:
    """The user whose `channel` contact is `address` (a Slack member id, a Telegram chat id)."""
    field = CHANNELS[channel].user_field if channel in CHANNELS else None
    if field is None or not address:
        return None
    return next((name for name, u in policies.users.items() if getattr(u, field) == address), None)


def _steps(user: User, user_name: str) -> tuple[list[Address], list[tuple[int, Address]]]:
    """Whom to reach now, and later while unacknowledged: the user's rules, else every contact."""
    if not user.notify:
        return _contacts(user, user_name), []
    now: list[Address] = []
    later: list[tuple[int, Address]] = []
    for rule in user.notify:
        kind, sep, name = rule.via.partition(":")
        field = CHANNELS[kind].user_field
        address = name if sep else (getattr(user, field) if field else None)
        if not address:
            continue  # a rule for a channel this person has no address on reaches nothing
        (
            now.append(Address(kind, address, user_name))
            if rule.after == 0
            else later.append((rule.after, Address(kind, address, user_name)))
        )
    return now, later


def _people(names: list[str], policies: PolicySet) -> tuple[list[Address], list[tuple[int, Address]]]:
    now: list[Address] = []
    later: list[tuple[int, Address]] = []
    for name in names:
        if name in policies.users:
            first, then = _steps(policies.users[name], name)
            now += first
            later += then
    return now, later


def _contacts(user: User, user_name: str) -> list[Address]:
    found = ((channel, getattr(user, field)) for field, channel in _CONTACTS)
    return [Address(channel, address, user_name) for channel, address in found if address]


def first_steps(user: User, user_name: str) -> list[Address]:
    """Where a page reaches this person at once (their rules' 0s steps, or every contact)."""
    return _steps(user, user_name)[0]


def contact_methods(user: User, user_name: str) -> list[Address]:
    """A person's contact methods in failover order (the registry's order: Slack, Telegram, email...)."""
    order = [kind.name for kind in CHANNEL_KINDS]
    return sorted(_contacts(user, user_name), key=lambda a: order.index(a.channel))


def _no_contact(target: str) -> str:
    methods = ", ".join(channel for _, channel in _CONTACTS)
    return f"{target}: no contact method on a configured channel ({methods})"


def _schedule(target: str, name: str, policies: PolicySet, at_ms: int | None, depth: int) -> Resolution:
    schedule = policies.schedules.get(name)
    if schedule is None:
        return Resolution(why_empty=f"{target}: no such schedule")
    if at_ms is None:
        return Resolution(why_empty=f"{target}: a schedule needs a time to say who is on call")
    people = oncall(schedule, at_ms)
    if people:
        addresses, later = _people(people, policies)
        return Resolution(
            addresses, people, why_empty="" if addresses or later else _no_contact(target), later=later
        )
    empty = f"{target}: nobody on call at {rfc3339(at_ms)}"
    if schedule.fallback is None or depth >= MAX_FALLBACKS:
        return Resolution(note=f"{empty}, and no fallback", why_empty=f"{empty}, and no fallback")
    backup = resolve_target(schedule.fallback, policies, at_ms, depth + 1)
    note = f"{empty}: paging its fallback {schedule.fallback}"
    return Resolution(backup.addresses, backup.people, note, backup.why_empty, backup.later)


def _team(target: str, name: str, policies: PolicySet, at_ms: int | None, depth: int) -> Resolution:
    """The team's schedule's on-call; when it has nobody (or the team no schedule), every member."""
    team = policies.teams.get(name)
    if team is None:
        return Resolution(why_empty=f"{target}: no such team")
    note = ""
    if team.schedule is not None:
        oncall_now = _schedule(f"schedule:{team.schedule}", team.schedule, policies, at_ms, depth)
        if oncall_now.people and not oncall_now.note:
            return oncall_now
        note = f"{target}: nobody on call on schedule {team.schedule}: paging every member"
    members = [m for m in team.members if m in policies.users]
    addresses, later = _people(members, policies)
    if not addresses and not later:
        return Resolution(note=note, why_empty=f"{target}: nobody on call and no member to page")
    return Resolution(addresses, members, note if team.schedule is not None else "", later=later)
