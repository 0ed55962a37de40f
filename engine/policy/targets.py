"""A policy target -> the channel addresses it reaches, at send time. Pure: no I/O, no clock."""

from collections.abc import Collection
from typing import NamedTuple

from engine.policy.channels import CHANNEL_KINDS, CHANNELS
from engine.policy.models import PolicySet, User

# a user's contact methods (User field, channel), in the order of the User model's fields
_CONTACTS = sorted(
    ((kind.user_field, kind.name) for kind in CHANNEL_KINDS if kind.user_field),
    key=lambda pair: list(User.model_fields).index(pair[0]),
)


class Address(NamedTuple):
    channel: str  # a channel kind: email, pagerduty, webhook, slack
    name: str  # channel-specific: an email address, a PagerDuty service, a webhook endpoint


def expand_target(target: str, policies: PolicySet) -> list[Address]:
    """The addresses `target` reaches now; [] when it reaches nobody."""
    kind, _, name = target.partition(":")
    if kind in CHANNELS:
        return [Address(kind, name)]
    if kind == "user":
        user = policies.users.get(name)
        if user is None:
            return []
        found = ((channel, getattr(user, field)) for field, channel in _CONTACTS)
        return [Address(channel, address) for channel, address in found if address]
    return []  # schedule:, team: arrive with on-call schedules


def reachable(target: str, addresses: list[Address], channels: Collection[str]) -> list[Address]:
    """A person is reached through the channels this engine has; the others are not errors."""
    if target.startswith("user:"):
        return [a for a in addresses if a.channel in channels]
    return addresses


def why_unreachable(target: str, policies: PolicySet) -> str:
    """Why `target` reached nobody, for the timeline."""
    kind, _, name = target.partition(":")
    if kind == "user":
        if name not in policies.users:
            return f"{target}: no such user"
        methods = ", ".join(channel for _, channel in _CONTACTS)
        return f"{target}: no contact method on a configured channel ({methods})"
    return f"{target}: {kind} targets cannot be delivered by this release yet"
