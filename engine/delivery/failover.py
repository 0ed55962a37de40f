"""Where a person's page goes when one of their contact methods gives up. Pure."""

from collections.abc import Callable, Collection

from engine.policy.models import PolicySet
from engine.policy.targets import Address, contact_methods, first_steps


def next_contact(
    failed: Address,
    policies: PolicySet,
    channels: Collection[str],
    usable: Callable[[Address], bool] = lambda a: True,
) -> Address | None:
    """The person's next contact method after `failed`, in failover order (Slack, Telegram,
    email, PagerDuty), on a configured channel and `usable` (its breaker not open). None for a
    channel target, an unknown person, or when nothing is left: only later methods, so a chain
    of failures ends. A method the same page already went to at once is not paged twice."""
    user = policies.users.get(failed.person) if failed.person else None
    if user is None:
        return None
    paged_at_once = set(first_steps(user, failed.person))
    methods = [a for a in contact_methods(user, failed.person) if a == failed or a not in paged_at_once]
    order = [a.channel for a in methods]
    start = order.index(failed.channel) + 1 if failed.channel in order else 0
    for address in methods[start:]:
        if address.channel in channels and address != failed and usable(address):
            return address
    return None
